"""The benchmark's own overhead on a GPU: trtopt's timing vs a bare CUDA-event loop, eager and CUDA graphs.

The same :class:`~trtopt.backends.torch_runner.TorchRunner` (ResNet-18, random weights, FP16, on
CUDA) is timed four ways at each batch size, alternating round by round in one process so clocks
and neighbours affect all alike: trtopt's :func:`~trtopt.benchmark.timing.measure` in
``gpu-no-transfer`` (eager) and ``cuda-graph`` modes, and a bare loop of CUDA events around the
same prepared callable (eager forward; ``graph.replay``). The reported overhead is the median over
rounds of the paired ratio bare / trtopt throughput - 1; it should be within 2 %. The CUDA-graph
gain over eager is reported as well (launch overhead that a graph removes, large at batch 1).
Needs a CUDA GPU; without one it prints why and exits 0 without writing anything.

Run:  python bench/gpu_runner_overhead.py [--out bench/results/gpu] [--rounds 5]
Writes OUT/runner_overhead.json and OUT/runner_overhead.md (device and driver recorded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "gpu"


def bare_sps(fn, batch: int, iters: int) -> float:
    """Samples/s of ``iters`` calls of ``fn`` between two CUDA events (after 10 warm-up calls)."""
    from gpu_env import time_ms

    return batch * 1e3 / time_ms(fn, warmup=10, reps=1, iters=iters)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT})")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU (torch.cuda.is_available() is False); nothing written")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_env import device_line, device_record, save_results

    from trtopt.backends.torch_runner import TorchRunner
    from trtopt.benchmark import BenchConfig, measure
    from trtopt.models.resnet import resnet18

    torch.manual_seed(0)
    rows = []
    cfg = BenchConfig(warmup=10, iterations=200)
    for bs in (int(b) for b in args.batches.split(",")):
        x = np.random.default_rng(0).standard_normal((bs, 3, 224, 224)).astype(np.float32)
        with TorchRunner(resnet18().eval(), precision="fp16", device="cuda", input_shape=(None, 3, 224, 224)) as r:
            feeds = {r.input_names[0]: x}
            eager, graph = r.prepare(feeds), r.prepare_cuda_graph(feeds)
            got: dict[str, list[float]] = {k: [] for k in ("trtopt_eager", "bare_eager", "trtopt_graph", "bare_graph")}
            for _ in range(args.rounds):
                got["trtopt_eager"].append(measure(r, feeds, cfg, mode="gpu-no-transfer").throughput_sps)
                got["bare_eager"].append(bare_sps(eager, bs, cfg.iterations))
                got["trtopt_graph"].append(measure(r, feeds, cfg, mode="cuda-graph").throughput_sps)
                got["bare_graph"].append(bare_sps(graph, bs, cfg.iterations))
        row = {"batch": bs, **{k: round(statistics.median(v), 1) for k, v in got.items()}}
        for mode in ("eager", "graph"):
            pairs = [b / t - 1 for b, t in zip(got[f"bare_{mode}"], got[f"trtopt_{mode}"])]
            row[f"overhead_{mode}_pct"] = round(100 * statistics.median(pairs), 2)
        row["graph_gain_x"] = round(row["bare_graph"] / row["bare_eager"], 3)
        rows.append(row)
        print(row, flush=True)
    env = device_record()
    lines = ["# Runner overhead on the GPU: trtopt measure() vs a bare CUDA-event loop", "",
             f"{device_line(env)} ResNet-18 FP16 at 224x224, {cfg.iterations} iterations per timing, "
             f"{args.rounds} alternating rounds.",
             "", "| batch | eager trtopt sps | eager bare sps | overhead % | graph trtopt sps | graph bare sps "
             "| overhead % | graph gain x |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['trtopt_eager']} | {r['bare_eager']} | {r['overhead_eager_pct']} "
                     f"| {r['trtopt_graph']} | {r['bare_graph']} | {r['overhead_graph_pct']} | {r['graph_gain_x']} |")
    save_results(args.out, "runner_overhead", {"device": env, "model": "ResNet-18 FP16, random weights",
                                               "iterations": cfg.iterations, "rounds": args.rounds, "rows": rows},
                 lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
