"""Library logging: a ``NullHandler`` on the package logger; only the CLI adds handlers."""

from __future__ import annotations

import logging

logging.getLogger("trtopt").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a trtopt module.

    Args:
        name: Usually ``__name__``.

    Returns:
        A child of the ``trtopt`` logger.
    """
    return logging.getLogger(name if name.startswith("trtopt") else f"trtopt.{name}")
