"""Name patterns: one syntax for ``trtopt prune --include/--exclude`` and ``trtopt quantize --exclude``.

Prune matches PyTorch module names, quantize ONNX node names. A pattern is an fnmatch glob
matched against the WHOLE name (``layer1.*``, ``*/attention/*``), or ``re:<regex>`` searched
anywhere in it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from trtopt.errors import ConfigError


def check_regexes(regexes: Iterable[str], what: str) -> None:
    """Raise naming ``what`` when a regular expression does not compile.

    Raises:
        ConfigError: ``invalid regular expression '<regex>' (<why>)``.
    """
    for p in regexes:
        try:
            re.compile(p)
        except re.error as exc:
            raise ConfigError(f"{what}: invalid regular expression '{p}' ({exc})") from None


def check_patterns(patterns: Iterable[str], what: str) -> None:
    """Raise naming ``what`` for an empty or non-string pattern, or a ``re:`` pattern that does not compile.

    Raises:
        ConfigError: A bad pattern.
    """
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ConfigError(f"{what}: patterns must be non-empty strings, got {p!r}")
        if p.startswith("re:"):
            check_regexes((p[3:],), what)


def to_regex(pattern: str) -> str:
    """The regular expression (for ``re.search``) of one pattern: a glob anchored to the whole name."""
    return pattern[3:] if pattern.startswith("re:") else "^" + fnmatch.translate(pattern)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches any of ``patterns``."""
    return any(re.search(to_regex(p), name) for p in patterns)
