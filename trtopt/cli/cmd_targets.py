"""``trtopt inspect targets MODEL.onnx``: what TensorRT for RTX can compile for each target GPU, before a build.

One row per target: the GPUs it stands for, whether TensorRT-RTX builds for it, the limits the model
meets there (Turing: no INT8 convolution, no FP32 GEMM) with how many quantized layers can still
compile INT8, and for Jetson / Hopper the runtime to build with instead. No TensorRT is needed.
``--json`` prints exactly one JSON object. A report: exit 0; bad input: exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "what TensorRT for RTX can compile for each target GPU (sm75 ... sm120, Jetson sm87), before a build"
#: Shown when no target is named: every TensorRT-RTX target, and Jetson Orin (which is not one).
DEFAULT_TARGETS = "sm75,sm80,sm86,sm89,sm120,sm121,sm87"


def add_targets_topic(topics: argparse._SubParsersAction) -> None:
    """Add ``inspect targets`` to the ``inspect`` topics."""
    p = topics.add_parser("targets", help=HELP, description=HELP + ". Limits measured with TensorRT for RTX 1.7 "
                          "(docs/tensorrt.md); the build's compiled-layer report confirms them.")
    p.add_argument("model", metavar="MODEL.onnx", type=Path, help="ONNX model")
    p.add_argument("--compute-capability", default=DEFAULT_TARGETS, metavar="SM,...",
                   help=f"targets to report (default {DEFAULT_TARGETS}); Jetson/Hopper ones name the runtime to use")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt inspect targets``."""
    import json

    from trtopt.backends.tensorrt.targets import normalize_cc, target_rows
    from trtopt.errors import ConfigError
    from trtopt.onnx.io import load_graph_only

    targets = list(dict.fromkeys(normalize_cc(t) for t in args.compute_capability.split(",") if t.strip()))
    if not targets:
        raise ConfigError("--compute-capability needs at least one target, e.g. sm75 or sm75,sm86")
    model = load_graph_only(args.model)
    rows = target_rows(model, targets)
    if args.json:
        print(json.dumps({"model": str(args.model), "targets": rows}))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=True, highlight=False)  # one line per fact: greppable when piped
    quantized = rows[0]["quantized"] if rows else 0
    console.print(f"[bold]{escape(args.model.name)}[/]: {quantized} quantized Conv/Gemm/MatMul layers; what "
                  "TensorRT for RTX compiles for each target (limits measured with TensorRT for RTX 1.7):")
    for r in rows:
        if not r["rtx"]:
            head = "[red]not a TensorRT for RTX target[/]"
        elif r["int8_expected"] is None:
            head = "no known limit (the build reports what compiled)"
        else:
            head = f"INT8 at most {r['int8_expected']} of {quantized} quantized layers"
        console.print(f"{r['target'].lower():6} {escape(r['gpus'] or '?')}: {head}")
        for note in r["notes"] if r["int8_expected"] is not None or not r["rtx"] else []:
            console.print(f"       - {escape(note.removeprefix(r['target'].lower() + ': '))}")
    return 0
