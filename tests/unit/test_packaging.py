"""Packaging: the dependencies and the CI command that README promises."""

from __future__ import annotations

from _helpers.paths import REPO_ROOT as ROOT


def test_matplotlib_is_a_base_dependency():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("matplotlib") for d in deps)
