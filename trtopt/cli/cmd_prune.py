"""``trtopt prune``: 2:4-prune a PyTorch model for TensorRT's sparse tensor cores, or shrink it densely.

Your model (``--model pkg.mod:fn`` / ``.pt``, ``--input`` specs) or a built-in ``--workload``;
magnitude, permutation or SparseGPT; optionally a masked fine-tune on ``--data TRAIN.npz`` (or a
dataloader factory) with distillation from the dense model; then the pruned module, masks, ONNX
and a JSON report are written together (all or nothing), after a one-screen summary.
``--method structured | lowrank | unstructured`` (fewer channels, low-rank factors, zeros) is
:mod:`trtopt.cli.cmd_prune_dense`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.cli.cmd_prune_dense import DENSE_METHODS, add_dense_args, check_method_options, run_dense
from trtopt.cli.model_source import add_model_args

HELP = ("2:4-prune a PyTorch model for TensorRT sparse tensor cores, or remove channels / factorize it for "
        "every GPU (+ fine-tune, ONNX export)")
EPILOG = ("example (your model, two inputs, fine-tuned with distillation):\n"
          "  trtopt prune --model mypkg.nlp:encoder --input ids:int64:batchx16:0..50 --input mask:int64:batchx16 \\\n"
          "      --data train.npz --finetune-epochs 3 --distill-alpha 0.5 --out-module p.pt --out-masks m.pt \\\n"
          "      --onnx p.onnx --report prune.json\n"
          "structured (fewer channels, faster on any GPU and CPU), 3 steps with distillation:\n"
          "  trtopt prune --workload digits_cnn --method structured --target-macs 0.5 --steps 3 \\\n"
          "      --finetune-epochs 2 --kd-alpha 0.5 --onnx small.onnx --report prune.json\n"
          "--data/--calib: .npz with one array per input name (samples on axis 0) plus 'labels'.\n"
          "--include/--exclude: fnmatch glob over the whole module name (layer1.*, *.fc), or re:REGEX.")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prune`` subcommand."""
    p = sub.add_parser("prune", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, "digits_cnn, resnet18, resnet50, mobilenet_v2 (with their data)")
    g = p.add_argument_group("Pruning")
    g.add_argument("--method", choices=("magnitude", "permutation", "sparsegpt", *DENSE_METHODS), default="magnitude",
                   help="2:4 (sparse tensor cores): magnitude, permutation, sparsegpt; dense, faster everywhere: "
                        "structured (channels), lowrank (SVD factors); unstructured (zeros: smaller files only)")
    g.add_argument("--pattern", default="2:4", help="sparsity pattern (only 2:4 runs on TensorRT)")
    g.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="prune only modules matching: fnmatch glob over the whole module name (layer1.*, "
                        "encoder.*.fc1), or re:REGEX searched in it; repeatable")
    g.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="never prune modules matching (same syntax as --include; also quantize's); repeatable")
    g.add_argument("--min-params", type=int, default=256, help="skip layers with fewer weights (default 256)")
    g.add_argument("--masks", type=Path, default=None, metavar="MASKS.pt",
                   help="apply an existing mask file instead of computing masks")
    g.add_argument("--calib", type=Path, default=None, metavar="CALIB.npz",
                   help="calibration inputs for sparsegpt: .npz with one array per input (default: the --data "
                        "inputs; a workload brings its own); a plain .npy is still read for a one-input model")
    g = p.add_argument_group("Fine-tuning (masks held fixed)")
    g.add_argument("--data", default=None, metavar="TRAIN.npz",
                   help="training data: .npz with one array per input and 'labels', or a dataloader factory "
                        "package.module:function yielding (inputs, labels) batches")
    g.add_argument("--finetune-epochs", type=int, default=0, help="masked fine-tune epochs (default 0: none)")
    g.add_argument("--loss", default="auto",
                   help="ce | mse | kd (distillation only, no labels) | package.module:function(outputs, labels) "
                        "-> scalar; auto: ce for integer labels and [N, C] outputs, else mse")
    g.add_argument("--lr", type=float, default=1e-3, help="fine-tune learning rate")
    g.add_argument("--batch-size", type=int, default=64, help="fine-tune batch size")
    g.add_argument("--distill-alpha", type=float, default=None,
                   help="distil from the dense model: a*loss + (1-a)*(T^2*KL for [N, C] outputs, else MSE)")
    g.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    g = p.add_argument_group("Output (written together after the work: all or nothing)")
    g.add_argument("--out-module", type=Path, default=None, help="save the pruned module (torch.save)")
    g.add_argument("--out-masks", type=Path, default=None, help="save the 2:4 masks (.pt)")
    g.add_argument("--onnx", type=Path, default=None, help="export the pruned model to ONNX (needs --input)")
    g.add_argument("--output-name", action="append", default=[], metavar="NAME", dest="output_names",
                   help="ONNX output name for --onnx, once per output in order (as in export)")
    g.add_argument("--report", type=Path, default=None, help="write the summary and per-layer report as JSON")
    g.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_dense_args(p)
    p.set_defaults(func=run)


@dataclass
class _Data:
    train_x: Any = None
    train_y: Any = None
    eval_x: Any = None
    eval_y: Any = None
    calib: Any = None
    note: str = ""


def _check_outputs(args: argparse.Namespace) -> dict[str, Path]:
    """Every output path is writable and distinct, before any work."""
    from trtopt.cli.model_source import source_files
    from trtopt.errors import ConfigError
    from trtopt.fileio import check_writable

    outs = {k: getattr(args, k) for k in ("out_module", "out_masks", "onnx", "report") if getattr(args, k)}
    inputs = [*source_files(args), args.masks, args.calib, args.data]
    for k, p in outs.items():
        check_writable(p, inputs=inputs, what=f"--{k.replace('_', '-')}")
    resolved = [Path(p).resolve() for p in outs.values()]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("--out-module, --out-masks, --onnx and --report must be different files")
    return outs


def _npz(path, specs, what: str):
    from trtopt.dataset import load_npz
    from trtopt.errors import ConfigError

    if not specs:
        raise ConfigError(f"{what} {path}: declare the model's inputs with --input NAME:DTYPE:SHAPE (one per "
                          "forward() argument) so the arrays can be matched to them")
    ds = load_npz(path).check(specs)
    if ds.static:
        raise ConfigError(f"{path}: per-call constant inputs {sorted(ds.static)} are not supported by prune")
    return {s.name: ds.inputs[s.name] for s in specs}, ds.labels  # forward() order = spec order


def _calib(args, specs, model):
    """``--calib`` as input name -> array (``forward()`` order), and the specs (derived from a .npy)."""
    import numpy as np

    from trtopt.dataset import Dataset
    from trtopt.errors import ConfigError, InputError
    from trtopt.log import get_logger
    from trtopt.models.reference import check_forward

    path = Path(args.calib)
    if path.suffix.lower() != ".npy":
        x, _ = _npz(path, specs, "--calib")
        return x, specs
    if not path.is_file():
        raise InputError(f"calibration file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path} is not a readable .npy array ({exc})") from None
    if not specs:
        from trtopt.inputs import Dim, InputSpec

        if arr.ndim < 1 or len(arr) == 0:
            raise InputError(f"{path}: calibration array of shape {list(arr.shape)} has no samples on axis 0")
        dtype = "float32" if np.issubdtype(arr.dtype, np.floating) else str(arr.dtype)
        if dtype not in ("float32", "int64", "int32"):
            raise InputError(f"{path}: calibration array dtype {arr.dtype} is not float32/int64/int32")
        specs = (InputSpec("input", dtype, (Dim(1, 1, max(32, len(arr)), "batch"),
                                            *(Dim(d, d, d) for d in arr.shape[1:]))),)
        check_forward(model, specs, ref=f"calibration data {path.name} (shape {list(arr.shape)})")
    elif len(specs) != 1:
        raise ConfigError(f"--calib {path}: a .npy holds one input but the model takes {len(specs)}; "
                          "use a .npz with one array per input")
    ds = Dataset({specs[0].name: arr}, source=path.name).check(specs)
    get_logger(__name__).warning("--calib %s: a .npy is deprecated; use a .npz with one array per input "
                                 "(np.savez('calib.npz', %s=x))", path, specs[0].name)
    return {specs[0].name: ds.inputs[specs[0].name]}, specs


def _load_data(args, src, ft) -> tuple[_Data, Any, Any]:
    from trtopt.refs import is_import_ref

    d = _Data()
    specs = src.specs
    if src.workload is not None:
        w = src.workload
        d = _Data(w.train_x, w.train_y, w.eval_x, w.eval_y, w.as_feeds(w.calib) if w.calib is not None else None,
                  "workload eval data")
        if args.data:
            from trtopt.errors import ConfigError

            raise ConfigError("--data applies to --model/--module; a --workload brings its own data")
    elif args.data and is_import_ref(args.data):
        from dataclasses import replace

        ft = replace(ft, data=args.data)
    elif args.data:
        d.train_x, d.train_y = _npz(args.data, specs, "--data")
        if d.train_y is not None:
            d.eval_x, d.eval_y, d.note = d.train_x, d.train_y, "training data"
    if args.calib is not None:
        d.calib, specs = _calib(args, specs, src.model)
    elif d.calib is None and d.train_x is not None and args.method == "sparsegpt":
        d.calib = d.train_x
    return d, specs, ft


def _prune(args, cfg, model, calib):
    from trtopt.sparsity.api import prune
    from trtopt.sparsity.masks import apply_masks_, kept_magnitude_share, load_masks, masked_weight, validate_masks
    from trtopt.sparsity.prune import PruneReport, classify_layers

    if args.masks is None:
        return prune(model, cfg, calib, hint="check --calib against --input")
    masks = load_masks(args.masks)
    validate_masks(model, masks, source=str(args.masks))
    records = classify_layers(model, cfg)
    modules = dict(model.named_modules())
    for r in records:
        r.pruned = r.name in masks
        if r.pruned:
            r.kept_magnitude_share = round(kept_magnitude_share(masked_weight(model, r.name, modules), masks[r.name]),
                                           6)
        r.reason = "mask from file" if r.pruned else (r.reason or "not in the mask file")
    apply_masks_(model, masks)
    return PruneReport(method=f"masks:{args.masks.name}", layers=records, masks=masks)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt prune``."""
    import copy
    import json

    from trtopt.cli.model_source import load_source
    from trtopt.errors import ConfigError
    from trtopt.sparsity import FinetuneConfig, PruneConfig
    from trtopt.sparsity.finetune import evaluate, masks_intact
    from trtopt.sparsity.summary import prune_summary, summary_lines

    # validate every option and output path before the (possibly slow) model load and pruning
    check_method_options(args)
    if args.method in DENSE_METHODS:
        from trtopt.cli.cmd_prune_dense import configs

        configs(args)
        _check_outputs(args)
        src = load_source(args, "prune")
        data, specs, _ = _load_data(args, src, FinetuneConfig(epochs=args.finetune_epochs))
        out = run_dense(args, src, data, specs)
        if out is None:
            return 1
        save_outputs(args, src.model, None, specs, src, out)
        return 0
    cfg = PruneConfig(method=args.method, pattern=args.pattern, include=tuple(args.include),
                      exclude=tuple(args.exclude), min_params=args.min_params)
    ft = FinetuneConfig(epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size,
                        distill_alpha=args.distill_alpha, temperature=args.temperature, loss=args.loss)
    _check_outputs(args)
    src = load_source(args, "prune")
    data, specs, ft = _load_data(args, src, ft)
    from trtopt.refs import import_callable, is_import_ref

    if args.finetune_epochs > 0 and is_import_ref(ft.loss):  # user code imports now, not after pruning
        import_callable(ft.loss, "loss")
    if args.finetune_epochs > 0 and ft.data is not None:
        import_callable(ft.data, "training data factory")
    if args.method == "sparsegpt" and data.calib is None and args.masks is None:
        raise ConfigError("--method sparsegpt needs calibration inputs: pass --calib CALIB.npz (one array per "
                          "input) or --data TRAIN.npz")
    if args.onnx and not specs and src.workload is None:
        raise ConfigError("--onnx needs the model's inputs: --input NAME:DTYPE:SHAPE per forward() argument "
                          "(or --input-shape N,C,H,W for one float32 input)")
    if args.finetune_epochs > 0 and data.train_x is None and ft.data is None:
        raise ConfigError("--finetune-epochs needs training data: --data TRAIN.npz (one array per input + "
                          "'labels'), --data package.module:function, or a --workload with training data")
    model = src.model
    teacher = copy.deepcopy(model).eval()
    metrics: dict[str, dict[str, float]] = {}
    if data.eval_y is not None:
        metrics["dense"] = evaluate(model, data.eval_x, data.eval_y)
    report = _prune(args, cfg, model, data.calib)
    if data.eval_y is not None:
        metrics["pruned"] = evaluate(model, data.eval_x, data.eval_y)
    history = None
    if args.finetune_epochs > 0:
        from trtopt.sparsity import finetune_masked

        need_teacher = args.distill_alpha is not None or ft.loss == "kd" or (ft.loss == "auto" and data.train_y
                                                                              is None and data.train_x is not None)
        history = finetune_masked(model, report, data.train_x, data.train_y, ft,
                                  teacher=teacher if need_teacher else None,
                                  on_epoch=None if getattr(args, "quiet", False) else _epoch_line)
        if data.eval_y is not None:
            metrics["fine-tuned"] = evaluate(model, data.eval_x, data.eval_y)
    ok = history.masks_intact if history is not None else not masks_intact(model, report.masks)
    summary = prune_summary(model, report, ok, history is not None, {k: v for k, v in metrics.items() if v})
    if data.note and metrics:
        summary["metrics_on"] = data.note
    out = {**report.to_dict(), "summary": summary,
           "accuracy": {f"{k} accuracy": v["accuracy"] for k, v in metrics.items() if "accuracy" in v}}
    if history is not None:
        out["finetune"] = history.to_dict()
    save_outputs(args, model, report, specs, src, out)
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join(summary_lines(summary)))
        labels = {"onnx": "ONNX model", "out_module": "pruned module", "out_masks": "masks", "report": "report"}
        for k, label in labels.items():
            if getattr(args, k) is not None:
                print(f"  wrote {label}: {getattr(args, k)}")
    if not any(getattr(args, k) for k in ("out_module", "out_masks", "onnx", "report")):
        import logging

        logging.getLogger("trtopt.prune").warning(
            "nothing saved: pass --onnx, --out-masks, --out-module or --report to keep the pruned model")
    return 0


def _epoch_line(rec: dict) -> None:
    """One stderr line per fine-tune epoch (stdout stays for the summary / --json)."""
    import sys

    acc = f", train accuracy {rec['train_accuracy']:.2f}%" if "train_accuracy" in rec else ""
    print(f"fine-tune epoch {rec['epoch']}/{rec['epochs']}: loss {rec['loss']:.4f}{acc}", file=sys.stderr, flush=True)


def save_outputs(args, model, report, specs, src, data) -> None:
    """Write every requested output into temporary files, then rename them all (nothing half-written).

    ``report`` (the 2:4 :class:`~trtopt.sparsity.prune.PruneReport`) is ``None`` for dense methods (no masks).
    """
    import contextlib
    import pickle

    import torch

    from trtopt.errors import InputError
    from trtopt.fileio import atomic_path
    from trtopt.refs import describe_exception

    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(getattr(args, k)))
               for k in ("out_module", "onnx", "out_masks", "report") if getattr(args, k) is not None}
        if "out_module" in tmp:
            try:
                torch.save(model, tmp["out_module"])
            except (TypeError, AttributeError, RuntimeError, pickle.PicklingError) as exc:
                raise InputError(f"cannot save the pruned module to {args.out_module}: {describe_exception(exc)} "
                                 "(keep --out-masks and rebuild it from its factory)") from None
        if "onnx" in tmp:
            from trtopt.export import ExportConfig, export_onnx, export_with_specs

            if specs:
                names = tuple(args.output_names)
                export_with_specs(model, specs, tmp["onnx"], ExportConfig(output_names=names))
            else:
                export_onnx(model, torch.from_numpy(src.workload.example), tmp["onnx"])
        if "out_masks" in tmp:
            from trtopt.sparsity.masks import save_masks

            save_masks(report.masks, tmp["out_masks"])
        if "report" in tmp:
            import json

            tmp["report"].write_text(json.dumps(data, indent=2, default=str))
