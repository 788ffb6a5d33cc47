"""Reusable argument groups and small parsing helpers shared by subcommands.

Every ``add_*`` function adds one titled argument group, so ``-h`` output is grouped the
same way in every subcommand. Nothing here imports heavy dependencies.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from trtopt.errors import ConfigError


def add_model_arg(parser: argparse.ArgumentParser, nargs: str | None = None, help_: str = "ONNX model") -> None:
    """Add the positional MODEL argument."""
    parser.add_argument("model", metavar="MODEL.onnx", type=Path, nargs=nargs, help=help_)


def add_regression_output_arg(group) -> None:
    """Add ``--regression-output NAME`` (repeatable) to an argument group (bench, quantize)."""
    group.add_argument("--regression-output", action="append", default=[], metavar="NAME",
                       help="output whose argmax means nothing (boxes, embeddings, regression values): judged by "
                            "cosine and worst-channel cosine only, not top-1 agreement; repeatable")


def add_output_kind_arg(group) -> None:
    """Add ``--output-kind NAME=KIND[:options]`` (repeatable) to an argument group (quantize, bench, run)."""
    from trtopt.judge.kinds import KINDS  # no heavy dependency: numpy and onnx only

    group.add_argument("--output-kind", action="append", default=[], metavar="NAME=KIND[:options]",
                       help="judge output NAME by its task where recognition is unsure; KIND is one of "
                            f"{', '.join(KINDS)}; options key=value,...: layout (detection cfirst/clast, ctc "
                            "ntc/tnc), box (xywh/xyxy), objectness, threshold, blank, cents, floor (percent); "
                            "repeatable")


def parse_output_kinds(items: Iterable[str]) -> dict:
    """``--output-kind`` items -> output name -> :class:`trtopt.judge.kinds.OutputKind` (one clear line on error)."""
    from trtopt.judge.kinds import parse_declarations

    return parse_declarations(list(items))


def refuse_ignored(rules: Iterable[tuple[bool, str]]) -> None:
    """Refuse an option that the rest of the command line makes meaningless, instead of ignoring it.

    Args:
        rules: ``(ignored, message)`` pairs; ``ignored`` is true when the option was given and this
            combination of options does not use it; ``message`` names the option and why.

    Raises:
        ConfigError: The first rule that holds, with its message.
    """
    for ignored, message in rules:
        if ignored:
            raise ConfigError(message)


def parse_int_list(text: str, what: str = "value") -> list[int]:
    """Parse ``"1,8,32"`` into ``[1, 8, 32]`` with a clear error.

    Args:
        text: Comma-separated positive integers.
        what: What the numbers are, for the message.

    Returns:
        The integers.
    """
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got '{text}'") from None
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"{what} must be positive integers, got '{text}'")
    return vals


def parse_percent(text: str, what: str) -> float:
    """Parse ``"5%"`` or ``"5"`` into ``5.0`` (percent).

    Args:
        text: Number with optional ``%``.
        what: Option name, for the message.

    Returns:
        The percentage as a float.
    """
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"{what} must be a number or percentage, got '{text}'") from None


def add_repair_arg(parser: argparse.ArgumentParser) -> None:
    """Add the ``INT8 repair`` group: ``--repair LIST|none`` (see :func:`parse_repair`)."""
    g = parser.add_argument_group("INT8 repair")
    g.add_argument("--repair", default=None, metavar="LIST|none",
                   help="repairs applied to the INT8 model before the fidelity guard keeps layers in float, "
                        "measured on the calibration data: comma-separated from 'bias' (per-channel bias "
                        "correction), or 'none'; default: the recipe's / config's")


def parse_repair(text: str) -> tuple[str, ...]:
    """Parse ``--repair``: ``"bias"`` -> ``("bias",)``; ``"none"`` -> ``()``.

    Raises:
        ConfigError: An empty list or an unknown repair name (one line listing the known ones).
    """
    from trtopt.quant.repair import REPAIRS

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in REPAIRS]
    if not names or bad:
        raise ConfigError(f"--repair takes a comma-separated list of {', '.join(REPAIRS)}, or none; got '{text}'")
    return names
