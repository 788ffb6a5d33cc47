"""Can the benchmark be trusted on a noisy machine?

Two checks, printed and saved under ``bench/results/timing_trust/`` (JSON + Markdown):

1. **Same-graph check** (``same-graph``): the FP32 digits CNN benchmarked as two variants (two ONNX
   Runtime sessions of the same file) ``--runs`` times. Each run times both variants with
   trtopt's interleaved rounds (what ``trtopt bench``/``demo`` do now: the speedup interval must
   contain 1.0 in >= 19 of 20 runs, and no run may report a significant speedup) and, in the same
   run, the way trtopt timed before interleaved rounds (one variant after the other, throughput = samples over
   the whole span), for comparison.
2. **Back-to-back demo runs** (``demo-twice``): ``trtopt demo`` twice in a row; every variant's
   speedup interval in run 1 must overlap run 2's.

    python bench/timing_trust.py same-graph --runs 20 --min-duration 1.0
    python bench/timing_trust.py demo-twice

The overhead check (trtopt vs a bare ``session.run`` loop) is ``bench/overhead_check.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trtopt.backends.onnxrt import OnnxRuntimeRunner
from trtopt.benchmark import BenchConfig, capture_environment, measure
from trtopt.benchmark.interleave import TimedVariant, measure_interleaved
from trtopt.benchmark.report import speedup_of
from trtopt.fileio import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "timing_trust"


def digits_model(path: Path) -> tuple[str, tuple[int, ...]]:
    """Export the (untrained) digits CNN the demo uses; returns its input name and sample shape."""
    import torch

    from trtopt.export import ExportConfig, export_onnx
    from trtopt.models.digits import make_digits_cnn

    torch.manual_seed(0)
    export_onnx(make_digits_cnn().eval(), torch.zeros(1, 1, 8, 8), path, ExportConfig())
    return "input", (1, 8, 8)


def same_graph(args: argparse.Namespace) -> dict:
    cfg = BenchConfig(warmup=10, min_duration_s=args.min_duration, rounds=args.rounds)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp32.onnx"
        name, shape = digits_model(path)
        feeds = {name: np.random.default_rng(0).normal(size=(args.batch, *shape)).astype(np.float32)}
        with OnnxRuntimeRunner(path, intra_op_threads=args.threads) as a, \
                OnnxRuntimeRunner(path, intra_op_threads=args.threads) as b:
            for i in range(args.runs):
                t0 = time.perf_counter()
                res = measure_interleaved([TimedVariant("fp32", a, feeds, args.batch),
                                           TimedVariant("fp32-copy", b, feeds, args.batch)], cfg, group="same")
                sp = speedup_of(res["fp32-copy"], res["fp32"])
                # before interleaved rounds: one variant after the other, throughput over the whole timed span
                ta, tb = measure(a, feeds, cfg), measure(b, feeds, cfg)
                lo, hi = sp["speedup_ci95"]
                runs.append({"run": i + 1, "interleaved_speedup": sp["speedup"], "ci95": [lo, hi],
                             "contains_1": lo <= 1.0 <= hi, "significant_speedup": lo > 1.0,
                             "significant_slowdown": hi < 1.0, "rounds": len(res["fp32"].round_sps),
                             "cv_a": res["fp32"].cv, "sequential_speedup": tb.throughput_sps / ta.throughput_sps,
                             "seconds": time.perf_counter() - t0})
                r = runs[-1]
                print(f"run {i + 1:2d}: interleaved {r['interleaved_speedup']:.3f}x ({lo:.3f}-{hi:.3f}) "
                      f"{'contains 1.0' if r['contains_1'] else 'SIGNIFICANT'}; sequential "
                      f"{r['sequential_speedup']:.3f}x", flush=True)
    seq = [r["sequential_speedup"] for r in runs]
    summary = {"runs": len(runs), "contains_1": sum(r["contains_1"] for r in runs),
               "significant_speedups": sum(r["significant_speedup"] for r in runs),
               "significant_slowdowns": sum(r["significant_slowdown"] for r in runs),
               "interleaved_speedup_min": min(r["interleaved_speedup"] for r in runs),
               "interleaved_speedup_max": max(r["interleaved_speedup"] for r in runs),
               "median_ci_width": float(np.median([r["ci95"][1] - r["ci95"][0] for r in runs])),
               "sequential_speedup_min": min(seq), "sequential_speedup_max": max(seq),
               "sequential_off_by_5pct": sum(abs(s - 1) > 0.05 for s in seq)}
    summary["pass"] = summary["contains_1"] >= int(0.95 * len(runs)) and summary["significant_speedups"] == 0
    return {"check": "same-graph", "model": "digits_cnn fp32 (same file, two sessions)", "batch": args.batch,
            "threads": args.threads, "min_duration_s": args.min_duration, "rounds": args.rounds,
            "summary": summary, "runs": runs}


def _speedups(report: Path) -> dict[str, dict]:
    data = json.loads(report.read_text())
    return {f"{v['name']}@{v['batch_size']}": v["vs_fp32"] for v in data["variants"] if v["status"] == "ok"}


def demo_twice(args: argparse.Namespace) -> dict:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in (1, 2):
            dest = Path(tmp) / f"run{i}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "trtopt.cli.main", "demo", "--out", str(dest)], check=True,
                           stdout=subprocess.DEVNULL)
            out.append((_speedups(dest / "report.json"), time.perf_counter() - t0))
    (a, ta), (b, tb) = out
    rows = []
    for k in a:
        ca, cb = a[k].get("speedup_ci95"), b[k].get("speedup_ci95")
        overlap = bool(ca and cb and ca[0] <= cb[1] and cb[0] <= ca[1])
        rows.append({"variant": k, "run1": a[k]["speedup"], "run1_ci95": ca, "run2": b[k]["speedup"],
                     "run2_ci95": cb, "overlap": overlap})
        print(f"{k:<22} run1 {a[k]['speedup']:.3f} {ca}  run2 {b[k]['speedup']:.3f} {cb}  "
              f"{'overlap' if overlap else 'NO OVERLAP'}")
    return {"check": "demo-twice", "seconds": [ta, tb], "rows": rows,
            "summary": {"variants": len(rows), "overlapping": sum(r["overlap"] for r in rows),
                        "pass": all(r["overlap"] for r in rows)}}


def _markdown(res: dict, command: str) -> str:
    s = res["summary"]
    lines = [f"# Timing trust: {res['check']}", "", f"Command: `{command}`", ""]
    if res["check"] == "same-graph":
        lines += [f"FP32 digits CNN as two variants, batch {res['batch']}, {res['runs'][0]['rounds']} interleaved "
                  f"rounds of {res['min_duration_s']:g} s per variant, threads {res['threads'] or 'default'}.", "",
                  f"- interval contains 1.0: **{s['contains_1']} of {s['runs']}** runs; significant speedups: "
                  f"**{s['significant_speedups']}**, significant slowdowns: {s['significant_slowdowns']}",
                  f"- interleaved speedup {s['interleaved_speedup_min']:.3f}–{s['interleaved_speedup_max']:.3f}, "
                  f"median interval width {s['median_ci_width']:.3f}",
                  f"- sequential (before interleaved rounds), same runs: {s['sequential_speedup_min']:.3f}–"
                  f"{s['sequential_speedup_max']:.3f}, off by > 5 % in {s['sequential_off_by_5pct']} of {s['runs']}",
                  "", "| run | interleaved speedup (95% CI) | sequential speedup |", "|---|---|---|"]
        lines += [f"| {r['run']} | {r['interleaved_speedup']:.3f} ({r['ci95'][0]:.3f}–{r['ci95'][1]:.3f})"
                  f"{'' if r['contains_1'] else ' **significant**'} | {r['sequential_speedup']:.3f} |"
                  for r in res["runs"]]
    else:
        lines += [f"Every speedup interval of run 1 overlaps run 2's: **{s['overlapping']} of {s['variants']}**.",
                  "", "| variant | run 1 speedup (95% CI) | run 2 speedup (95% CI) | overlap |", "|---|---|---|---|"]
        fmt = lambda x, ci: f"{x:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")  # noqa: E731
        lines += [f"| {r['variant']} | {fmt(r['run1'], r['run1_ci95'])} | {fmt(r['run2'], r['run2_ci95'])} | "
                  f"{'yes' if r['overlap'] else '**no**'} |" for r in res["rows"]]
    return "\n".join([*lines, ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=("same-graph", "demo-twice"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64, help="same-graph: batch size (the demo's is 64)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default, as the demo)")
    ap.add_argument("--min-duration", type=float, default=1.0, help="seconds per variant (the demo's default)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    res = same_graph(args) if args.check == "same-graph" else demo_twice(args)
    command = "python bench/timing_trust.py " + " ".join(sys.argv[1:])
    res.update(command=command, environment=capture_environment())
    print(json.dumps(res["summary"], indent=1))
    if not args.no_write:
        atomic_write_json(RESULTS / f"{args.check}.json", res)
        atomic_write_text(RESULTS / f"{args.check}.md", _markdown(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
