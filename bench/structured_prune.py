"""Structured pruning to half the MACs on ResNet-18 and MobileNetV2 (built-in layouts) trained on real digits.

Data: scikit-learn's digits (8x8, 1,797 images), upsampled bilinearly to ``--size`` pixels and
repeated to 3 channels, split as the demo splits it (train / calibration / held-out test). Each
network (10 classes) is trained dense for ``--epochs`` epochs, then pruned by
:func:`trtopt.pruning.api.prune_dense` to ``--target-macs`` of its Conv/Linear MACs in
``--steps`` steps with ``--ft-epochs`` of distillation fine-tune after each. Both models are
exported to ONNX and timed with ONNX Runtime on the CPU in interleaved rounds
(:func:`trtopt.benchmark.interleave.measure_interleaved`), the speedup being the median paired
per-round ratio with its bootstrap 95 % interval (:func:`trtopt.benchmark.stats.paired_ratio_ci`).

Run:  PYTHONPATH=. python bench/structured_prune.py [--nets resnet18,mobilenet_v2] [--epochs 6]
Writes bench/results/structured/<net><tag>.json and summary<tag>.md (the machine is recorded in each).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trtopt.backends import open_runner
from trtopt.benchmark.config import BenchConfig
from trtopt.benchmark.interleave import TimedVariant, measure_interleaved
from trtopt.benchmark.stats import paired_ratio_ci
from trtopt.export import export_onnx
from trtopt.fileio import atomic_write_json, atomic_write_text
from trtopt.models.digits import accuracy, load_digits_split, train_classifier
from trtopt.pruning import ScheduleConfig, StructuredConfig, TaskData
from trtopt.pruning.api import prune_dense

OUT = Path(__file__).resolve().parent / "results" / "structured"


def upsample(x: np.ndarray, size: int) -> np.ndarray:
    """[N, 1, 8, 8] -> [N, 3, size, size], bilinear."""
    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return t.repeat(1, 3, 1, 1).contiguous().numpy()


def build(name: str):
    from trtopt.models.mobilenet import mobilenet_v2
    from trtopt.models.resnet import resnet18

    return {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}[name](10)


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    with open_runner("onnxruntime", path) as r:
        out = np.concatenate([r.infer({"input": x[i : i + 64]})["logits"] for i in range(0, len(x), 64)])
    return round(100.0 * float((out.argmax(1) == y).mean()), 3)


def time_pair(dense: Path, pruned: Path, x: np.ndarray, args) -> dict:
    cfg = BenchConfig(warmup=5, min_duration_s=args.seconds, rounds=args.rounds, min_rounds=min(8, args.rounds),
                      seed=0)
    feeds = {"input": x[: args.batch]}
    threads = args.threads
    with open_runner("onnxruntime", dense, intra_op_threads=threads) as rd, \
            open_runner("onnxruntime", pruned, intra_op_threads=threads) as rp:
        res = measure_interleaved([TimedVariant("dense", rd, feeds, args.batch),
                                   TimedVariant("pruned", rp, feeds, args.batch)], cfg, group=f"b{args.batch}")
    ratio, lo, hi = paired_ratio_ci(res["pruned"].round_sps, res["dense"].round_sps)
    return {"batch": args.batch, "intra_op_threads": threads, "rounds": len(res["dense"].round_sps),
            "dense_sps": round(res["dense"].throughput_sps, 2), "dense_sps_ci95": res["dense"].throughput_ci95,
            "pruned_sps": round(res["pruned"].throughput_sps, 2), "pruned_sps_ci95": res["pruned"].throughput_ci95,
            "speedup": round(ratio, 4), "speedup_ci95": (round(lo, 4), round(hi, 4)),
            "speedup_excludes_1": bool(lo > 1.0)}


def run_net(name: str, split, args) -> dict:
    xtr, xte, xc = (upsample(a, args.size) for a in (split.x_train, split.x_test, split.x_calib))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    dense = train_classifier(build(name), xtr, split.y_train, epochs=args.epochs, lr=args.lr)
    train_s = time.perf_counter() - t0
    model = copy.deepcopy(dense)
    t0 = time.perf_counter()
    result = prune_dense(model, StructuredConfig(target_macs=args.target_macs, importance=args.importance,
                                                 round_to=args.round_to),
                         {"input": xte[:1]},
                         ScheduleConfig(steps=args.steps, epochs=args.ft_epochs, lr=args.ft_lr, kd_alpha=args.kd_alpha,
                                        max_drop=1.0),
                         TaskData((xtr,), split.y_train, (xte,), split.y_test))
    prune_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        pd, pp = Path(tmp) / "dense.onnx", Path(tmp) / "pruned.onnx"
        export_onnx(dense, torch.from_numpy(xte[:1]), pd)
        export_onnx(model, torch.from_numpy(xte[:1]), pp)
        acc = {"dense_torch": round(accuracy(dense, xte, split.y_test), 3),
               "pruned_torch": round(accuracy(model, xte, split.y_test), 3),
               "dense_onnxruntime": ort_accuracy(pd, xte, split.y_test),
               "pruned_onnxruntime": ort_accuracy(pp, xte, split.y_test)}
        timing = time_pair(pd, pp, xc, args)
        sizes = {"dense_onnx_bytes": pd.stat().st_size, "pruned_onnx_bytes": pp.stat().st_size}
    drop = acc["dense_onnxruntime"] - acc["pruned_onnxruntime"]
    return {
        "net": name, "input": [3, args.size, args.size], "test_images": len(xte),
        "train": {"epochs": args.epochs, "seconds": round(train_s, 1)},
        "prune": {"target_macs": args.target_macs, "importance": args.importance, "steps": args.steps,
                  "ft_epochs_per_step": args.ft_epochs, "kd_alpha": args.kd_alpha, "seconds": round(prune_s, 1)},
        "macs": {"dense": result.macs_before, "pruned": result.macs_after, "ratio": round(result.macs_ratio, 4)},
        "params": {"dense": result.params_before, "pruned": result.params_after},
        "steps": [s.__dict__ for s in result.steps],
        "accuracy": acc, "top1_drop_points": round(drop, 3), "onnx": sizes, "timing": timing,
        "targets": {"speedup>=1.5_and_ci_excludes_1": timing["speedup"] >= 1.5 and timing["speedup_excludes_1"],
                    "top1_within_1_point": drop <= 1.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="resnet18,mobilenet_v2")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--target-macs", type=float, default=0.5)
    ap.add_argument("--importance", default="l1")
    ap.add_argument("--round-to", type=int, default=8, help="channel multiple (1: any count)")
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. -round1)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--kd-alpha", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    split = load_digits_split(seed=0)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
               "onnxruntime": __import__("onnxruntime").__version__,
               "note": "2 shared CPU cores (other jobs running): intervals carry that noise"}
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.nets.split(","):
        rec = {**run_net(name, split, args), "machine": machine, "args": vars(args)}
        atomic_write_json(OUT / f"{name}{args.tag}.json", rec)
        rows.append(rec)
        print(name, rec["macs"], rec["accuracy"], rec["timing"]["speedup"], rec["timing"]["speedup_ci95"], flush=True)
    lines = ["# Structured pruning to half the MACs (digits upsampled, ONNX Runtime CPU)", "",
             f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs ({machine['note']}).", "",
             "| net | MACs dense -> pruned | top-1 dense / pruned (ORT) | speedup (95 % CI) | targets met |",
             "|---|---|---|---|---|"]
    for r in rows:
        t, m, a = r["timing"], r["macs"], r["accuracy"]
        missed = [k for k, v in r["targets"].items() if not v]
        lines.append(f"| {r['net']} | {m['dense']:,} -> {m['pruned']:,} ({100 * m['ratio']:.1f} %) "
                     f"| {a['dense_onnxruntime']:.2f} / {a['pruned_onnxruntime']:.2f} "
                     f"| {t['speedup']:.3f}x ({t['speedup_ci95'][0]:.3f}-{t['speedup_ci95'][1]:.3f}) "
                     f"| {'no: ' + ', '.join(missed) if missed else 'yes'} |")
    atomic_write_text(OUT / f"summary{args.tag}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
