"""Packaging: the dependencies and the CI command that README promises."""

from __future__ import annotations

from _helpers.paths import REPO_ROOT
from _helpers.paths import REPO_ROOT as ROOT


def test_matplotlib_is_a_base_dependency():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("matplotlib") for d in deps)


def test_ci_runs_the_readme_test_command():

    root = REPO_ROOT
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash")[1:]]
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd in ci.replace("pip install -q torch", "pip install -q torch"), (test_cmd, ci)
    demo_cmd = next(b for b in blocks if b.endswith("trtopt demo"))
    assert "torch==2.13.0" in demo_cmd
