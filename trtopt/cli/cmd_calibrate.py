"""``trtopt calibrate``: activation ranges -> JSON table + TensorRT calibration cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trtopt.cli.args import add_model_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` subcommand."""
    p = sub.add_parser(
        "calibrate", help="calibrate activation ranges (auto/entropy/minmax/percentile/mse) -> JSON + TensorRT cache",
        description="Stream calibration data through the model (ONNX Runtime on the CPU, or PyTorch on a CUDA "
                    "GPU when one is present), reduce activations to |x| histograms and compute per-tensor ranges. "
                    "Writes <stem>.calib.json and the TensorRT "
                    "calibration cache <stem>.calib.cache into --out and prints their paths.")
    add_model_arg(p)
    g = p.add_argument_group("Data")
    g.add_argument("--data", type=Path, required=True, metavar="CALIB.npz",
                   help="one array per model input name, samples on axis 0 (a 'labels' array is ignored); "
                        "an array named 'static:<input>' is passed unchanged with every call (recurrent state, "
                        "sample rate; see docs/data-format.md)")
    g.add_argument("--static-input", action="append", default=[], metavar="NAME",
                   help="treat the .npz array NAME as a per-call constant input too (repeatable)")
    g.add_argument("--batch-size", type=int, default=32, help="samples per batch (default 32)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sample order (default 0)")
    g.add_argument("--max-samples", type=int, default=0, help="use at most N samples (default: all)")
    m = p.add_argument_group("Method")
    m.add_argument("--method", choices=("auto", "entropy", "minmax", "percentile", "mse"), default="auto",
                   help="range method (default auto: per tensor, analytic ranges for Softmax/Sigmoid/Tanh outputs, "
                        "else the lowest-error candidate among entropy/percentile/mse/max, guarded against "
                        "collapse and outliers; entropy = TensorRT EntropyCalibrator2)")
    m.add_argument("--no-analytic", action="store_true",
                   help="histogram Softmax/Sigmoid/HardSigmoid/Tanh outputs like any tensor (strict TensorRT parity)")
    m.add_argument("--percentile", type=float, default=99.99, help="percentile for --method percentile")
    m.add_argument("--num-bins", type=int, default=2048,
                   help="histogram bins, rounded up to a power of two (default 2048)")
    m.add_argument("--all-tensors", action="store_true",
                   help="calibrate every float tensor (complete cache for TensorRT 10 implicit INT8)")
    c = p.add_argument_group("Collector")
    c.add_argument("--collector", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="where activations are computed and histogrammed (default auto: torch on a CUDA GPU, "
                        "else ONNX Runtime)")
    c.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="device of the torch collector (default auto)")
    o = p.add_argument_group("Output")
    o.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    o.add_argument("--json", action="store_true",
                   help="print the table as one JSON object (with per-tensor method and reason) instead of the paths")
    o.add_argument("--trt-version", type=int, default=100300,
                   help="NV_TENSORRT_VERSION written in the cache header (default 100300 = 10.3.0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt calibrate``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    from trtopt.errors import ConfigError

    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    cfg = CalibrationConfig(method=args.method, percentile=args.percentile, num_bins=args.num_bins,
                            scope="all" if args.all_tensors else "quantizable", collector=args.collector,
                            device=args.device, analytic=not args.no_analytic)
    from trtopt.calib.collect import choose_collector

    choose_collector(cfg)  # a bad --device / missing CUDA fails here, before any progress output
    from trtopt.fileio import check_writable

    if Path(args.out).suffix.lower() in (".json", ".cache"):
        raise ConfigError(f"--out {args.out} names a file, but --out is the output folder: the table is written "
                          f"as <model>.calib.json and .calib.cache inside it (e.g. --out {Path(args.out).parent})")
    check_writable(args.out, folder=True)
    from trtopt.fileio import check_not_input

    stem = Path(args.model).stem
    check_not_input([args.out / f"{stem}.calib.json", args.out / f"{stem}.calib.cache"], [args.model, args.data])
    src = NumpySource.from_npz(args.data, batch_size=args.batch_size, seed=args.seed, max_samples=args.max_samples,
                               exclude=("labels", "label", "y"), static=tuple(args.static_input),
                               model=args.model)  # the whole file against the model, before the first batch
    err = Console(stderr=True, soft_wrap=True)  # never split node names mid-line
    with Progress(TextColumn("[bold cyan]calibrate[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("collect", total=src.num_samples)
        table = calibrate(args.model, src, cfg, progress=lambda done, _t: bar.update(task, completed=done))
    from trtopt.fileio import sha256_file

    # `trtopt quantize` finds the data here for its fidelity guard (verified by content hash)
    table.meta["data_file"] = {"path": str(Path(args.data).resolve()), "sha256": sha256_file(args.data),
                               "static": list(args.static_input)}
    js = table.save_json(args.out / f"{stem}.calib.json")
    cache = table.write_trt_cache(args.out / f"{stem}.calib.cache", trt_version=args.trt_version)
    won: dict[str, int] = {}
    for row in table.info.values():
        won[row["method"]] = won.get(row["method"], 0) + 1
    chosen = f": {', '.join(f'{k} {v}' for k, v in sorted(won.items()))}" if args.method == "auto" else ""
    flagged = sum(1 for row in table.info.values() if row.get("flags"))
    err.print(f"{len(table)} tensors calibrated ({args.method}{chosen}; collector {table.meta.get('collector', '?')}) "
              f"on {table.num_samples} samples" + (f"; {flagged} flagged (see warnings)" if flagged else ""),
              markup=False, highlight=False)
    if args.json:
        print(json.dumps({**table.to_dict(), "files": {"json": str(js), "cache": str(cache)}}))
    else:
        print(js)
        print(cache)
    return 0
