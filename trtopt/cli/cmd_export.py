"""``trtopt export``: a workload's PyTorch model (or a saved module) to ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a PyTorch model to ONNX (a built-in workload, or a torch.save'd module)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser("export", help=HELP, description=HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workload", help="built-in workload: digits_cnn, resnet18, resnet50, mobilenet_v2")
    src.add_argument("--module", type=Path, metavar="MODEL.pt",
                     help="a full module saved with torch.save(model) "
                     "(loaded with weights_only=False: trusted files only)")
    p.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="example input shape (required with --module)")
    p.add_argument("--out", type=Path, required=True, help="output .onnx path")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--static-batch", action="store_true", help="do not make the batch axis dynamic")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt export``."""
    from trtopt.cli.args import parse_int_list
    from trtopt.errors import ConfigError, InputError
    from trtopt.export import ExportConfig, export_onnx

    cfg = ExportConfig(opset=args.opset, dynamic_batch=not args.static_batch)
    import torch

    if args.workload:
        from trtopt.models.workloads import WorkloadConfig, load_workload

        w = load_workload(WorkloadConfig(model=args.workload))
        model, sample = w.model, torch.from_numpy(w.example)
    else:
        if not args.input_shape:
            raise ConfigError("--input-shape is required with --module")
        if not args.module.is_file():
            raise InputError(f"module file not found: {args.module}")
        try:
            model = torch.load(args.module, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise InputError(f"cannot load {args.module} as a torch module: {exc}") from None
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"{args.module} holds a {type(model).__name__}, not a torch.nn.Module")
        sample = torch.zeros(parse_int_list(args.input_shape, "--input-shape"))
    path = export_onnx(model, sample, args.out, cfg)
    print(path)
    return 0
