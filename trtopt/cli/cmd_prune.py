"""``trtopt prune``: 2:4-prune a PyTorch model for TensorRT's sparse tensor cores.

Methods: magnitude, permutation or SparseGPT; optionally a masked fine-tune (with distillation
from the dense model), then the pruned module, masks, ONNX and a JSON report are saved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "2:4-prune a PyTorch model for TensorRT sparse tensor cores (+ masked fine-tune, ONNX export)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prune`` subcommand."""
    p = sub.add_parser("prune", help=HELP, description=HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workload", help="built-in workload: digits_cnn, resnet18, resnet50, mobilenet_v2")
    src.add_argument("--module", type=Path, metavar="MODEL.pt",
                     help="a module saved with torch.save(model) (weights_only=False: trusted files only)")
    g = p.add_argument_group("Pruning")
    g.add_argument("--method", choices=("magnitude", "permutation", "sparsegpt"), default="magnitude")
    g.add_argument("--pattern", default="2:4", help="sparsity pattern (only 2:4 runs on TensorRT)")
    g.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="prune only layers matching (fnmatch glob, or re:REGEX); repeatable")
    g.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="never prune; repeatable")
    g.add_argument("--min-params", type=int, default=256, help="skip layers with fewer weights (default 256)")
    g.add_argument("--masks", type=Path, default=None, metavar="MASKS.pt",
                   help="apply an existing mask file instead of computing masks")
    g.add_argument("--calib", type=Path, default=None, metavar="X.npy",
                   help="calibration inputs for sparsegpt with --module (a workload brings its own)")
    g = p.add_argument_group("Fine-tuning (workloads with training data)")
    g.add_argument("--finetune-epochs", type=int, default=0, help="masked fine-tune epochs (default 0: none)")
    g.add_argument("--lr", type=float, default=1e-3, help="fine-tune learning rate")
    g.add_argument("--distill-alpha", type=float, default=None,
                   help="distil from the dense model: loss = a*CE + (1-a)*T^2*KL")
    g.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    g = p.add_argument_group("Output")
    g.add_argument("--out-module", type=Path, default=None, help="save the pruned module (torch.save)")
    g.add_argument("--out-masks", type=Path, default=None, help="save the 2:4 masks (.pt)")
    g.add_argument("--onnx", type=Path, default=None, help="export the pruned model to ONNX")
    g.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="example input shape (with --module)")
    g.add_argument("--report", type=Path, default=None, help="write the per-layer report as JSON")
    g.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace):
    """Return (model, example input, calib, train_x, train_y, eval_x, eval_y)."""
    import numpy as np
    import torch

    from trtopt.cli.args import parse_int_list
    from trtopt.errors import ConfigError, InputError

    if args.workload:
        from trtopt.models.workloads import WorkloadConfig, load_workload

        w = load_workload(WorkloadConfig(model=args.workload))
        return (w.model, torch.from_numpy(w.example), w.calib, w.train_x, w.train_y, w.eval_x, w.eval_y)
    if not args.module.is_file():
        raise InputError(f"module file not found: {args.module}")
    try:
        model = torch.load(args.module, map_location="cpu", weights_only=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load {args.module} as a torch module: {first}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{args.module} holds a {type(model).__name__}, not a torch.nn.Module")
    sample = torch.zeros(parse_int_list(args.input_shape, "--input-shape")) if args.input_shape else None
    if args.onnx and sample is None:
        raise ConfigError("--input-shape is required with --module and --onnx")
    calib = None
    if args.calib is not None:
        if not args.calib.is_file():
            raise InputError(f"calibration file not found: {args.calib}")
        try:
            calib = np.load(args.calib).astype(np.float32)
        except Exception as exc:
            raise InputError(f"{args.calib} is not a readable .npy array ({type(exc).__name__})") from None
    return model.eval(), sample, calib, None, None, None, None


def _prune(args, cfg, model, calib):
    from trtopt.sparsity import prune_
    from trtopt.sparsity.masks import apply_masks_, kept_magnitude_share, load_masks, validate_masks
    from trtopt.sparsity.prune import classify_layers

    if args.masks is None:
        return prune_(model, cfg, calib_inputs=calib)
    from trtopt.sparsity.prune import PruneReport

    masks = load_masks(args.masks)
    validate_masks(model, masks, source=str(args.masks))
    records = classify_layers(model, cfg)
    modules = dict(model.named_modules())
    for r in records:
        r.pruned = r.name in masks
        if r.pruned:
            r.kept_magnitude_share = round(kept_magnitude_share(modules[r.name].weight, masks[r.name]), 6)
        r.reason = "mask from file" if r.pruned else (r.reason or "not in the mask file")
    apply_masks_(model, masks)
    return PruneReport(method=f"masks:{args.masks.name}", layers=records, masks=masks)


def _print_report(report, accuracies: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"2:4 pruning ({report.method})")
    for col in ("layer", "kind", "weight shape", "pruned", "kept |w|", "reason / note"):
        table.add_column(col, overflow="fold")
    for r in report.layers:
        kept = "" if r.kept_magnitude_share is None else f"{100 * r.kept_magnitude_share:.1f}%"
        shape = "x".join(map(str, r.shape))
        table.add_row(r.name, r.kind, shape, "yes" if r.pruned else "no", kept, r.reason)
    console = Console()
    console.print(table)
    for k, v in accuracies.items():
        console.print(f"{k}: {v:.2f}%")


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt prune``."""
    import copy
    import json

    from trtopt.errors import ConfigError
    from trtopt.sparsity import FinetuneConfig, PruneConfig

    # validate every option before the (possibly slow) model load
    cfg = PruneConfig(method=args.method, pattern=args.pattern, include=tuple(args.include),
                      exclude=tuple(args.exclude), min_params=args.min_params)
    ft = FinetuneConfig(epochs=args.finetune_epochs, lr=args.lr, distill_alpha=args.distill_alpha,
                        temperature=args.temperature)
    model, sample, calib, x_train, y_train, x_eval, y_eval = _load(args)
    if args.method == "sparsegpt" and calib is None and args.masks is None:
        raise ConfigError("--method sparsegpt needs calibration inputs: pass --calib X.npy")
    teacher = copy.deepcopy(model).eval()
    acc = {}
    if y_eval is not None:
        from trtopt.models.digits import accuracy

        acc["dense accuracy"] = accuracy(model, x_eval, y_eval)
    report = _prune(args, cfg, model, calib)
    if y_eval is not None:
        acc["pruned accuracy (one-shot)"] = accuracy(model, x_eval, y_eval)
    if args.finetune_epochs > 0:
        if x_train is None:
            raise ConfigError("--finetune-epochs needs a workload with training data (--workload digits_cnn)")
        from trtopt.sparsity import finetune_masked

        finetune_masked(model, report, x_train, y_train, ft,
                        teacher=teacher if args.distill_alpha is not None else None)
        acc["pruned accuracy (fine-tuned)"] = accuracy(model, x_eval, y_eval)
    data = {**report.to_dict(), "accuracy": acc}
    _save(args, model, report, sample, data)
    if args.json:
        print(json.dumps(data))
    else:
        _print_report(report, acc)
    return 0


def _save(args, model, report, sample, data) -> None:
    import torch

    from trtopt.errors import InputError
    from trtopt.fileio import atomic_path, atomic_write_json

    if args.out_module is not None:  # the riskiest write first, so a failure leaves nothing behind
        try:
            with atomic_path(args.out_module) as tmp:
                torch.save(model, tmp)
        except (TypeError, AttributeError, RuntimeError) as exc:
            raise InputError(f"cannot save the pruned module to {args.out_module}: {exc}") from None
    if args.onnx is not None:
        from trtopt.export import export_onnx

        export_onnx(model, sample, args.onnx)
    if args.out_masks is not None:
        from trtopt.sparsity.masks import save_masks

        save_masks(report.masks, args.out_masks)
    if args.report is not None:
        atomic_write_json(args.report, data)
