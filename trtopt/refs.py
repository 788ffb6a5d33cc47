"""References to user code: ``package.module:function`` strings.

Model factories, training-data factories, loss functions and task metrics are given as an
importable reference, the same way everywhere (CLI, recipe, Python API). Resolving one never
raises a bare ``ImportError``/``AttributeError``: the error names the reference, what it was
for and the usual fix (put the package on ``PYTHONPATH`` or ``pip install -e`` it).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

from trtopt.errors import ConfigError, InputError

_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_import_ref(text: str) -> bool:
    """Whether ``text`` looks like ``package.module:attr`` (not a file path, not a plain name)."""
    return bool(_REF.match(str(text)))


def import_object(ref: str, what: str = "object") -> Any:
    """Import ``package.module:attr`` (``attr`` may be dotted: ``mod:Class.method``).

    The current working folder is on the import path, as for ``python -m``: a user project's
    package is found when trtopt is run from the project root.

    Args:
        ref: The reference.
        what: What the object is for (``"model factory"``, ``"metric"``), for messages.

    Returns:
        The object.

    Raises:
        ConfigError: ``ref`` is not of the form ``package.module:attr``.
        InputError: The module does not import, or has no such attribute (the message gives the
            import error's first line and the fix).
    """
    if not is_import_ref(ref):
        raise ConfigError(f"{what} '{ref}' is not an import reference: write it as package.module:function")
    mod_name, attr = ref.split(":", 1)
    if "" not in sys.path:  # `trtopt` is a console script: the working folder is not on sys.path by itself
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"{what} '{ref}': cannot import module '{mod_name}' ({exc}); run trtopt from the "
                         "folder holding the package, add that folder to PYTHONPATH, or pip install -e it") from None
    except Exception as exc:  # user code failing at import time: one line, not a traceback
        raise InputError(f"{what} '{ref}': importing '{mod_name}' raised {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{what} '{ref}': module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def import_callable(ref: str, what: str = "function") -> Callable[..., Any]:
    """:func:`import_object`, checked to be callable."""
    obj = import_object(ref, what)
    if not callable(obj):
        raise InputError(f"{what} '{ref}' is a {type(obj).__name__}, not a function")
    return obj


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe_exception(exc: BaseException) -> str:
    """``"TypeError: first line of the message"`` for one-line error reports on user code."""
    return f"{type(exc).__name__}: {_first_line(exc)}"
