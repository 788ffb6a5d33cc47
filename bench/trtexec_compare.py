"""trtopt vs trtexec on the same TensorRT engine, side by side, in trtexec's vocabulary.

Needs a GPU, TensorRT and ``trtexec`` (on PATH or ``--trtexec``). Builds (or reuses) the engine with
trtopt, times it with :func:`trtopt.benchmark.trtexec_metrics.measure_trtexec_style` and with
``trtexec --loadEngine`` (default H2D/D2H transfers, one stream), and prints one table:
Throughput (qps), Latency, Enqueue Time, H2D Latency, GPU Compute Time, D2H Latency (median, ms),
Total Host Walltime, Total GPU Compute Time.

    python bench/trtexec_compare.py                              # tiny conv net, batch 16
    python bench/trtexec_compare.py --onnx model.onnx --shape input:32x3x224x224 --precision fp16

Writes bench/results/trtexec_compare/<name>_b<batch>.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "trtexec_compare"


def main() -> int:
    from trtopt.backends.tensorrt import BuildConfig, Profile, build_engine
    from trtopt.backends.tensorrt.runner import TensorRTRunner
    from trtopt.benchmark import capture_environment
    from trtopt.benchmark.trtexec_metrics import measure_trtexec_style, parse_trtexec_log, side_by_side
    from trtopt.fileio import atomic_write_json, atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, default=None, help="ONNX model (default: a tiny conv net)")
    ap.add_argument("--shape", default="input:16x1x8x8", help="NAME:DxDx... of the single input")
    ap.add_argument("--precision", default="fp32", help="fp32, fp16, int8 (Q/DQ graphs)")
    ap.add_argument("--duration", type=float, default=3.0, help="timed seconds for each tool")
    ap.add_argument("--trtexec", default=shutil.which("trtexec") or "trtexec")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if shutil.which(args.trtexec) is None and not Path(args.trtexec).is_file():
        print(f"trtexec_compare: error: trtexec not found ({args.trtexec}); pass --trtexec PATH", file=sys.stderr)
        return 2
    name, _, dims = args.shape.partition(":")
    shape = tuple(int(d) for d in dims.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx
        if onnx_path is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from _helpers.onnx_models import tiny_conv_net

            onnx_path = Path(tiny_conv_net(Path(tmp) / "tiny.onnx"))
        cfg = BuildConfig(precision=args.precision, shapes=(Profile.static(name, shape),))
        engine = build_engine(onnx_path, cfg, engine_dir=Path(tmp) / "engines").engine
        feeds = {name: np.random.default_rng(0).random(shape, dtype=np.float32)}
        with TensorRTRunner(engine) as runner:
            ours = measure_trtexec_style(runner, feeds, shape[0], duration_s=args.duration)
        cmd = [args.trtexec, f"--loadEngine={engine}", f"--shapes={args.shape}", f"--duration={args.duration:g}",
               "--warmUp=500"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(f"trtexec_compare: error: trtexec failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 2
        theirs = parse_trtexec_log(res.stdout)
    rows = side_by_side(ours, theirs)
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'trtopt':>12}  {'trtexec':>12}")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>12}  {r[2]:>12}")
    if not args.no_write:
        stem = RESULTS / f"{Path(onnx_path).stem}_b{shape[0]}"
        command = "python bench/trtexec_compare.py " + " ".join(sys.argv[1:])
        atomic_write_json(stem.with_suffix(".json"), {"trtopt": ours, "trtexec": theirs, "command": command,
                                                      "trtexec_command": " ".join(cmd[1:]),
                                                      "environment": capture_environment()})
        md = ["# trtopt vs trtexec on the same engine", "", f"Command: `{command}`", "",
              "| metric | trtopt | trtexec |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows], ""]
        atomic_write_text(stem.with_suffix(".md"), "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
