"""Overhead check: trtopt's measure() vs a bare ``session.run`` loop on ONNX Runtime (CPU).

Both time the same InferenceSession on the same bound inputs, alternating round by round in
one process (so drift, thermal state and neighbours affect both alike). The reported ratio is
the median over rounds of the paired per-round ratio trtopt / bare (pairs run back to back, so
slow load drift cancels); it should be within 2% of 1.0. The ratio of median
throughputs is printed too. ``trtopt bench``/``demo`` time through
:func:`~trtopt.benchmark.interleave.measure_interleaved` (interleaved rounds); its loop is timed
here as a third method, on equal footing (samples over the sum of its rounds' spans, not the
median of rounds, which would drop stalls the bare loop has to count).

    python bench/overhead_check.py                 # digits CNN (exported with torch), batch 32
    python bench/overhead_check.py --model helper  # onnx.helper MLP, no torch needed
    python bench/overhead_check.py --batch 1 --rounds 20 --iterations 2000

Writes bench/results/overhead_check.json and .md (small; no models).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trtopt.backends.onnxrt import OnnxRuntimeRunner
from trtopt.benchmark import BenchConfig, capture_environment, measure
from trtopt.benchmark.interleave import TimedVariant, measure_interleaved
from trtopt.fileio import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def digits_model(path: Path) -> tuple[str, tuple[int, ...]]:
    import torch

    from trtopt.export import ExportConfig, export_onnx
    from trtopt.models.digits import make_digits_cnn

    torch.manual_seed(0)
    model = make_digits_cnn().eval()
    export_onnx(model, torch.zeros(1, 1, 8, 8), path, ExportConfig())
    return "input", (1, 8, 8)


def helper_model(path: Path) -> tuple[str, tuple[int, ...]]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [256, 512, 512, 10]
    nodes, inits, cur = [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        inits += [numpy_helper.from_array((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}")]
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"], name=f"/fc{i}/MatMul"))
        cur = f"m{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"/act{i}/Relu"))
            cur = f"r{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 256])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [None, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return "input", (256,)


def bare_loop(sess, names, feeds, iterations: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(iterations):
        sess.run(names, feeds)
    return (time.perf_counter_ns() - t0) * 1e-9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("digits", "helper"), default="digits")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=500, help="timed iterations per round and method")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        name, shape = (digits_model if args.model == "digits" else helper_model)(path)
        x = np.random.default_rng(0).normal(size=(args.batch, *shape)).astype(np.float32)
        with OnnxRuntimeRunner(path, intra_op_threads=args.threads) as runner:
            sess = runner.session
            names = [o.name for o in sess.get_outputs()]
            feeds = {name: np.ascontiguousarray(x)}
            cfg = BenchConfig(warmup=20, iterations=args.iterations)
            bare_loop(sess, names, feeds, 50)  # shared warm-up
            ours, bare, inter = [], [], []
            for r in range(args.rounds):
                order = [("trtopt", "bare", "interleaved"), ("bare", "interleaved", "trtopt"),
                         ("interleaved", "trtopt", "bare")][r % 3]  # rotate who goes first
                for who in order:
                    if who == "bare":
                        bare.append(args.batch * args.iterations / bare_loop(sess, names, feeds, args.iterations))
                    elif who == "trtopt":
                        ours.append(measure(runner, feeds, cfg, batch_size=args.batch).throughput_sps)
                    else:
                        t = measure_interleaved([TimedVariant("m", runner, feeds, args.batch)], cfg)["m"]
                        inter.append(args.batch * t.iterations / t.total_s)
    per_round = [o / b for o, b in zip(ours, bare)]
    ratio = statistics.median(per_round)
    per_round_i = [o / b for o, b in zip(inter, bare)]
    ratio_i = statistics.median(per_round_i)
    result = {
        "model": args.model, "batch": args.batch, "rounds": args.rounds, "iterations": args.iterations,
        "trtopt_median_sps": statistics.median(ours), "bare_median_sps": statistics.median(bare),
        "ratio": ratio, "ratio_of_medians": statistics.median(ours) / statistics.median(bare),
        "per_round_ratio_min": min(per_round), "per_round_ratio_max": max(per_round),
        "within_5_percent": abs(ratio - 1) <= 0.05, "within_2_percent": abs(ratio - 1) <= 0.02,
        "interleaved_median_sps": statistics.median(inter), "ratio_interleaved": ratio_i,
        "interleaved_within_2_percent": abs(ratio_i - 1) <= 0.02,
        "command": "python bench/overhead_check.py " + " ".join(sys.argv[1:]),
        "environment": capture_environment(),
    }
    print(f"{'method':<8} {'median samples/s':>18}")
    print(f"{'trtopt':<8} {result['trtopt_median_sps']:>18,.1f}")
    print(f"{'bare':<8} {result['bare_median_sps']:>18,.1f}")
    print(f"ratio trtopt/bare = {ratio:.4f} (median of paired rounds; ratio of medians "
          f"{result['ratio_of_medians']:.4f}; per-round {min(per_round):.3f}..{max(per_round):.3f}); "
          f"{'within' if result['within_2_percent'] else 'OUTSIDE'} 2%")
    print(f"ratio interleaved/bare = {ratio_i:.4f} (median of paired rounds; per-round "
          f"{min(per_round_i):.3f}..{max(per_round_i):.3f}); "
          f"{'within' if result['interleaved_within_2_percent'] else 'OUTSIDE'} 2%")
    if not args.no_write:
        stem = RESULTS / f"overhead_check_{args.model}_b{args.batch}"
        atomic_write_json(stem.with_suffix(".json"), result)
        atomic_write_text(stem.with_suffix(".md"), "\n".join([
            f"# Overhead check ({args.model}, batch {args.batch}, ONNX Runtime CPU)", "",
            "| method | median samples/s |", "|---|---|",
            f"| trtopt measure() | {result['trtopt_median_sps']:,.1f} |",
            f"| trtopt measure_interleaved() (samples / round spans) | {result['interleaved_median_sps']:,.1f} |",
            f"| bare session.run loop | {result['bare_median_sps']:,.1f} |", "",
            f"Ratio trtopt/bare (median of paired rounds): **{ratio:.4f}** over {args.rounds} alternating rounds "
            f"of {args.iterations} "
            f"iterations (per-round {min(per_round):.3f}..{max(per_round):.3f}).", "",
            f"Ratio interleaved/bare (median of paired rounds): **{ratio_i:.4f}** "
            f"(per-round {min(per_round_i):.3f}..{max(per_round_i):.3f}).", "",
            f"Command: `{result['command']}`", ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
