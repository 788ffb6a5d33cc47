"""``trtopt doctor MODEL``: what trtopt will do with a model, and what it cannot, before any work.

``MODEL`` is what ``trtopt export`` takes: an ``.onnx``, or a PyTorch model (``package.module:function``
with ``--weights``, a ``torch.save``'d ``.pt``, a built-in name) with ``--input`` specs; a PyTorch model
is exported to a temporary ONNX file exactly as ``trtopt export`` would, and that graph is diagnosed.

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
    from trtopt.cli.model_source import INPUT_HELP

    p.add_argument("model", metavar="MODEL",
                   help="MODEL.onnx, or a PyTorch model as `trtopt export --model` takes it: package.module:function "
                        "(a factory), a torch.save'd MODEL.pt or a built-in name, with --input specs: it is exported "
                        "to a temporary ONNX file (as `trtopt export` would) and that graph is diagnosed")
    p.add_argument("--weights", type=Path, default=None, metavar="W.pt", help="state dict for a factory MODEL")
    p.add_argument("--input", action="append", default=[], metavar="SPEC", dest="inputs", help=INPUT_HELP)
    p.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="one float32 input of this shape (the older form of --input)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of the export of a PyTorch model (default 17)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--strict", action="store_true", help="exit 1 when a finding is an error")
    p.set_defaults(func=run)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` subcommand."""
    add_doctor_args(sub.add_parser("doctor", help=HELP, description=HELP))


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt doctor``."""
    import json

    report = _diagnose(args)
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


def _is_onnx_file(text: str) -> bool:
    """An ``.onnx`` reference, or an existing path that is no PyTorch file (diagnosed as ONNX, errors included)."""
    p = Path(text)
    return p.suffix.lower() == ".onnx" or (p.exists() and p.suffix.lower() not in (".pt", ".pth"))


def _diagnose(args: argparse.Namespace):  # -> trtopt.doctor.DoctorReport
    """Diagnose an ``.onnx`` as it is, or a PyTorch model through a temporary export (the graph `export` writes)."""
    from trtopt.cli.args import refuse_ignored
    from trtopt.doctor import diagnose

    if _is_onnx_file(args.model):
        refuse_ignored([(bool(args.inputs or args.weights or args.input_shape),
                         "--input/--input-shape/--weights describe the export of a PyTorch model; an .onnx is "
                         "diagnosed as it is: drop them")])
        return diagnose(args.model)
    import tempfile

    from trtopt.cli.model_source import load_source
    from trtopt.errors import ConfigError
    from trtopt.export import ExportConfig, export_with_specs

    source = argparse.Namespace(model=args.model, module=None, workload=None, weights=args.weights,
                                inputs=args.inputs, input_shape=args.input_shape)
    src = load_source(source, "diagnose")
    if not src.specs:
        raise ConfigError(f"declare the inputs of {src.ref} to export it for the diagnosis: --input NAME:DTYPE:SHAPE "
                          "per forward() argument (e.g. --input image:float32:batchx3x224x224), as for trtopt export")
    with tempfile.TemporaryDirectory(prefix="trtopt-doctor-") as tmp:
        path = export_with_specs(src.model, src.specs, Path(tmp) / "model.onnx", ExportConfig(opset=args.opset))
        report = diagnose(path)
    for f in report.findings:  # name the user's model, not the temporary file
        f.message, f.fix = (t.replace(str(path), src.ref) for t in (f.message, f.fix))
    report.model = f"{src.ref} (exported to ONNX opset {args.opset} for the diagnosis, as `trtopt export` does)"
    return report
