"""``trtopt inspect sparsity MODEL.onnx``: which layers are 2:4, and will the GPU run them sparse.

``--json`` prints exactly one JSON object (``layers``, ``summary``, ``preflight``) on stdout.
The command is a report: it exits 0 even when layers are not compliant, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("inspect a model (sparsity: 2:4 status + GPU pre-flight verdict; model: the doctor report; targets: what "
        "TensorRT for RTX compiles for each GPU)")
GPU_CHOICES = ("t4", "orin", "a100", "h100", "auto")  # mirrors trtopt.sparsity.preflight (no import for -h)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` subcommand and its ``sparsity`` topic."""
    p = sub.add_parser("inspect", help=HELP, description=HELP)
    topics = p.add_subparsers(dest="topic", metavar="TOPIC")
    s = topics.add_parser(
        "sparsity", help="2:4 structured-sparsity report for an ONNX model",
        description="Report, for every Conv/Gemm/MatMul with a constant weight, whether it is 2:4 along "
                    "the axis TensorRT prunes (Conv: 1; Gemm B: 1 if transB else 0; MatMul B: 0), "
                    "looking through Q/DQ, Cast and Transpose; plus a pre-flight verdict for the target GPU.",
    )
    s.add_argument("model", metavar="MODEL.onnx", type=Path, help="ONNX model")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    s.add_argument("--gpu", choices=GPU_CHOICES, default="auto",
                   help="target GPU for the verdict (auto: the local CUDA GPU, else unknown)")
    s.add_argument("--out", type=Path, default=None, help="also write the JSON report to this file")
    s.set_defaults(func=run)
    from trtopt.cli.cmd_doctor import add_doctor_args

    add_doctor_args(topics.add_parser("model", help="the `trtopt doctor` report: what trtopt will do with a model",
                                      description="Same report as `trtopt doctor`."))
    from trtopt.cli.cmd_targets import add_targets_topic

    add_targets_topic(topics)
    p.set_defaults(func=lambda _args, _p=p: _p.print_help() or 2)


def _print_tables(report) -> None:
    from rich.table import Table

    from trtopt.cli import tables

    console = tables.console(soft_wrap=True)  # piped/CI: the table's own width, node names never cut
    table = Table(title=f"2:4 sparsity: {report.model}", show_lines=False)
    for col in ("node", "op", "weight shape", "axis", "eligible", "2:4", "groups ok", "size", "note"):
        table.add_column(col, overflow="fold")
    for ly in report.layers:
        note = "" if ly.compliant else ly.reason.split(";")[0]
        table.add_row(ly.node, ly.op, "x".join(map(str, ly.shape)), str(ly.axis),
                      "yes" if ly.eligible else "no", "[green]yes[/]" if ly.compliant else "[red]no[/]",
                      f"{ly.compliant_group_share:.0%}", "ok" if ly.large_enough else "small", note)
    tables.print_table(console, table, ("size", "groups ok", "eligible", "axis", "weight shape"))
    s = report.summary
    console.print(f"eligible {s['eligible']}/{s['layers']}, compliant {s['compliant']}, "
                  f"weight FLOPs that could run sparse: {100 * s['sparse_flop_share']:.1f}%")
    pf = report.preflight
    console.print(f"[bold]pre-flight ({pf.gpu}): {pf.verdict}[/] - {pf.message}")
    for w in pf.warnings:
        console.print(f"  warning: {w}")


def _control_flow_verdict(report) -> None:
    """When every Conv/Gemm/MatMul sits inside If/Loop/Scan, say so instead of advising to prune."""
    note = report.summary.get("control_flow_note", "")
    if not note:
        return
    if report.summary.get("layers", 0) == 0:
        report.preflight.verdict = "control_flow"
        report.preflight.message = (
            f"no top-level Conv/Gemm/MatMul; {note}. Pruning cannot be checked here: export the model "
            "without control flow (trace one branch / unroll the loop) to inspect its layers.")
    else:
        report.preflight.warnings.append(note)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt inspect sparsity``."""
    import json

    from trtopt.sparsity.preflight import inspect_sparsity

    if args.out is not None:
        from trtopt.fileio import check_writable

        check_writable(args.out, inputs=[args.model])
    report = inspect_sparsity(args.model, gpu=args.gpu)
    _control_flow_verdict(report)
    data = report.to_dict()
    if args.out is not None:
        from trtopt.fileio import atomic_write_json

        atomic_write_json(args.out, data)
    if args.json:
        print(json.dumps(data))
    else:
        _print_tables(report)
    return 0
