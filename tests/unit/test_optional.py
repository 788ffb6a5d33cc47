"""Install hints for a missing extra fit how trtopt was installed (source checkout or package index)."""

from __future__ import annotations

import json

from trtopt._optional import from_source, install_hint
from trtopt.errors import MissingDependencyError


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
    msg = str(MissingDependencyError("tensorrt", "tensorrt"))
    assert 'pip install -e ".[tensorrt]"' in msg and "pip install 'trtopt[tensorrt]'" not in msg


def test_index_install_hint(monkeypatch):
    import trtopt._optional as opt

    monkeypatch.setattr(opt, "installed_from_source", lambda: False)
    assert "pip install 'trtopt[tensorrt]'" in str(MissingDependencyError("tensorrt", "tensorrt"))
