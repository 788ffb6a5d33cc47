"""Paths of the checkout the tests run from, and loading of the benchmark scripts' shared modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The repository root (the folder that holds ``pyproject.toml``).
REPO_ROOT = Path(__file__).resolve().parents[2]


def load_bench_module(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` by its path, without putting ``bench/`` on ``sys.path``.

    Args:
        name: the module's file name without ``.py``, e.g. ``"ppocr_common"``.

    Returns:
        The module, registered in ``sys.modules`` as ``bench_<name>`` (loaded once per process).
    """
    key = f"bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, REPO_ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the class body runs
    spec.loader.exec_module(module)
    return module
