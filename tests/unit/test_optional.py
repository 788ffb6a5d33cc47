"""Optional dependencies: the extras named in install hints exist, and base dependencies name none."""

from __future__ import annotations

import tomllib
from pathlib import Path

from trtopt.errors import MissingDependencyError
from trtopt.optional import EXTRAS, missing_dependency, require

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
