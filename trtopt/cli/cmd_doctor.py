"""``trtopt doctor MODEL.onnx``: what trtopt will do with a model, and what it cannot, before any work.

Prints one line per finding (severity, what, fix), or with ``--json`` exactly one JSON object on
stdout. Exit 0 for a report (also with warnings), 1 with ``--strict`` when a finding is an error,
2 on bad input. ``trtopt inspect model`` is the same report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check a model before optimizing it: opset, dynamic dims, control flow, FP16 range, quantized/FP16 graphs"


def add_doctor_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``doctor`` and ``inspect model``."""
    p.add_argument("model", metavar="MODEL.onnx", type=Path, help="ONNX model")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--strict", action="store_true", help="exit 1 when a finding is an error")
    p.set_defaults(func=run)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` subcommand."""
    add_doctor_args(sub.add_parser("doctor", help=HELP, description=HELP))


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt doctor``."""
    import json

    from trtopt.doctor import diagnose

    report = diagnose(args.model)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(soft_wrap=True, highlight=False)
        ins = ", ".join(f"{i['name']} {i['dtype']}[{', '.join(map(str, i['shape']))}]" for i in report.inputs)
        console.print(f"[bold]{escape(report.model)}[/]: opset {report.opset}, "
                      f"{sum(report.op_counts.values())} nodes, inputs {escape(ins)}")
        color = {"info": "green", "warn": "yellow", "error": "red"}
        for f in report.findings:
            console.print(f"[{color[f.severity]}]{f.severity:5}[/] {escape(f.message)}")
            if f.fix:
                console.print(f"      fix: {escape(f.fix)}")
    return 1 if args.strict and report.worst == "error" else 0
