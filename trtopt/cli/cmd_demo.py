"""``trtopt demo``: the packaged digits recipe, end to end on ONNX Runtime (CPU)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from trtopt.cli.cmd_run import add_run_args, execute

HELP = ("train a small CNN on scikit-learn's digits, then prune 2:4, export, calibrate, quantize "
        "and benchmark FP32/FP16/INT8/2:4 variants on ONNX Runtime (CPU, < 3 min)")


def demo_recipe_path() -> Path:
    """Return the path of the packaged demo recipe (same file as bench/recipes/digits_demo.toml)."""
    return Path(str(resources.files("trtopt") / "data" / "recipes" / "digits_demo.toml"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help=HELP, description=HELP)
    add_run_args(p, "runs/digits-demo; the committed example: --out bench/results/digits-demo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt demo``."""
    return execute(demo_recipe_path(), args)
