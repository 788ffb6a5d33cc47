"""Optional dependencies: install hints fit the install and name extras that exist; base dependencies name none."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from trtopt.errors import MissingDependencyError
from trtopt.optional import EXTRAS, from_source, install_hint, missing_dependency, require

ROOT = Path(__file__).resolve().parents[2]


def test_every_extra_named_for_a_module_is_defined_in_pyproject():
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(defined), sorted(set(EXTRAS.values()) - set(defined))


def test_a_base_dependency_is_reinstalled_not_an_extra():
    msg = str(missing_dependency("torch", detail="the torch collector"))
    assert "[torch]" not in msg and "reinstall" in msg and msg.endswith("; the torch collector")


def test_require_names_the_extra_and_its_install_command():
    try:
        require("tensorrt_rtx_surely_absent_module", "tensorrt-rtx")
    except MissingDependencyError as exc:
        assert exc.extra == "tensorrt-rtx" and "[tensorrt-rtx] extra (pip install" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("require() imported a module that does not exist")


def test_install_hint_fits_the_install(tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages" / "trtopt"
    editable = json.dumps({"dir_info": {"editable": True}, "url": "file:///src/trtopt"})
    wheel = json.dumps({"archive_info": {}, "url": "file:///dl/trtopt-0.1.0-py3-none-any.whl"})
    assert from_source(tmp_path / "clone" / "trtopt", None)  # a checkout on PYTHONPATH / editable finder
    assert from_source(site, editable)
    assert not from_source(site, wheel) and not from_source(site, None)  # from a package index


def test_missing_extra_hint_in_this_checkout_is_editable():
    """This test runs from a source checkout: the hint is the clone's command, not the index's."""
    assert install_hint("tensorrt") == 'pip install -e ".[tensorrt]"'
    msg = str(missing_dependency("tensorrt"))
    assert 'pip install -e ".[tensorrt]"' in msg and "pip install 'trtopt[tensorrt]'" not in msg


def test_index_install_hint(monkeypatch):
    import trtopt.optional as opt

    monkeypatch.setattr(opt, "installed_from_source", lambda: False)
    assert "pip install 'trtopt[tensorrt]'" in str(missing_dependency("tensorrt"))
