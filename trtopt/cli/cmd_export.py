"""``trtopt export``: your PyTorch model (a factory, a torch.save'd module or a built-in) to ONNX.

Inputs are declared once per ``forward`` argument with ``--input NAME:DTYPE:SHAPE`` (names, dtypes,
dynamic axes and example tensors of the export all come from these specs); the older
``--input-shape N,C,H,W`` still exports a single float32 input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trtopt.cli.model_source import add_model_args

HELP = "export a PyTorch model to ONNX (your factory pkg.mod:fn, a torch.save'd .pt, or a built-in workload)"
EPILOG = ("examples:\n"
          "  trtopt export --model mypkg.models:build --weights w.pt --input image:float32:batchx3x224x224 "
          "--out m.onnx\n"
          "  trtopt export --model mypkg.nlp:encoder --input ids:int64:batchx16:0..50 --input mask:int64:batchx16 "
          "--out enc.onnx\n"
          "  trtopt export --workload resnet18 --out r18.onnx")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser("export", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, "digits_cnn, resnet18, resnet50, mobilenet_v2")
    p.add_argument("--out", type=Path, required=True, help="output .onnx path")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--output-name", action="append", default=[], metavar="NAME", dest="output_names",
                   help="graph output name, once per output in order (default: output, or output_0.. for several)")
    p.add_argument("--static-batch", action="store_true",
                   help="with --input-shape/--workload: do not make the batch axis dynamic (--input declares its "
                        "own dynamic axes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt export``."""
    from dataclasses import replace

    from trtopt.cli.model_source import load_source, source_files
    from trtopt.errors import ConfigError
    from trtopt.export import ExportConfig, export_onnx, export_with_specs
    from trtopt.fileio import check_writable

    cfg = ExportConfig(opset=args.opset, dynamic_batch=not args.static_batch)
    if args.output_names:
        cfg = replace(cfg, output_names=tuple(args.output_names))
    check_writable(args.out, inputs=source_files(args))  # before loading the model
    src = load_source(args, "export", dynamic_batch=not args.static_batch)
    if src.workload is not None:
        import torch

        if isinstance(src.workload.example, dict):
            raise ConfigError(f"workload {args.workload} has several inputs: export it with --model and --input specs")
        path = export_onnx(src.model, torch.from_numpy(src.workload.example), args.out, cfg)
    else:
        if not src.specs:
            raise ConfigError(f"declare the model's inputs: --input NAME:DTYPE:SHAPE per forward() argument "
                              f"(e.g. --input input:float32:batchx3x224x224), or --input-shape for one float32 "
                              f"input ({src.ref})")
        path = export_with_specs(src.model, src.specs, args.out, cfg)
    print(path)
    return 0
