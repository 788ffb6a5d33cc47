"""Histogram collection speed and memory: ONNX Runtime (CPU) vs the torch collector on CPU and CUDA.

Same exported ResNet-18 (random weights), same calibration samples, same batch size. Each
collector runs in its own subprocess so peak RSS (VmHWM) is its own; on CUDA the peak of
``torch.cuda.max_memory_allocated`` is recorded too. Only histogram collection is timed
(``collect_histograms`` / ``collect_histograms_torch`` over the quantizable tensors, as
``calibrate`` does), not model export or data loading. Entropy amax per tensor is compared
with the ONNX Runtime collector's when both ran on the same setting.

Run:  python bench/calib_torch_collector.py [--runs resnet18:64:112:ort-cpu+torch-cpu+torch-cuda,...]
      (each run is ARCH:SAMPLES:IMAGE_SIZE:COLLECTOR+COLLECTOR; collectors ort-cpu, torch-cpu,
      torch-cuda, and the plain-inference floors ort-cpu-floor, torch-cpu-floor, torch-cuda-floor)
Writes bench/results/calib/torch_collector.json and torch_collector.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "calib"
DEFAULT_RUNS = "resnet18:64:112:ort-cpu+torch-cpu+torch-cuda,resnet18:256:224:ort-cpu+torch-cpu+torch-cuda"


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory figure (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key)) / 1024.0


def _reset_peak_rss() -> float:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5) and return that RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def floor(collector: str, model_path: str, data: str, batch: int) -> dict:
    """Plain inference over the same batches, twice (cold, then warm): the floor any calibrator pays.

    ``ort-cpu-floor``: an ONNX Runtime CPU session; ``torch-cpu-floor`` / ``torch-cuda-floor``: the
    torch collector's graph executor asked for the graph outputs only (no intermediates, no histograms).
    """
    import onnx
    import torch

    from trtopt.calib.torch_exec import TorchGraphExecutor

    x = np.load(data)
    device = collector.split("-")[1]
    if collector.startswith("ort"):
        import onnxruntime as ort

        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def one(xb):
            sess.run(None, {name: xb})
    else:
        model = onnx.load(model_path)
        ex = TorchGraphExecutor(model, device)
        outs = frozenset(o.name for o in model.graph.output)

        def one(xb):
            for _ in ex.run({model.graph.input[0].name: xb}, outs):
                pass
    if device == "cuda":
        torch.zeros(1, device="cuda")
    secs = []
    for _ in range(2):
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            one(x[i:i + batch])
        if device == "cuda":
            torch.cuda.synchronize()
        secs.append(time.perf_counter() - t0)
    return {"seconds": round(secs[1], 3), "seconds_cold": round(secs[0], 3),
            "samples_per_s": round(len(x) / secs[1], 1), "torch_threads": torch.get_num_threads()}


def worker(collector: str, model_path: str, data: str, batch: int) -> dict:
    """Collect histograms twice (cold, then warm) with one collector; return times, memory, entropy amax."""
    if collector.endswith("-floor"):
        return floor(collector, model_path, data, batch)
    import onnx
    import onnxruntime  # noqa: F401  (loaded before the baseline RSS reading, like torch)
    import torch

    from trtopt.calib import CalibrationConfig, NumpySource, calibration_targets, collect_histograms
    from trtopt.calib.methods import compute_amax
    from trtopt.calib.torch_hist import collect_histograms_torch
    from trtopt.onnx.graph import float_tensor_types

    model = onnx.load(model_path)
    x = np.load(data)
    types = float_tensor_types(model)
    targets = calibration_targets(model, types=types)
    cfg = CalibrationConfig(run_batch_size=batch)
    device = collector.split("-")[1]
    if device == "cuda":
        torch.zeros(1, device="cuda")  # CUDA context creation is not collection time
        torch.cuda.reset_peak_memory_stats()
    base = _reset_peak_rss()
    secs = []
    for _ in range(2):  # cold (first-call kernel selection / JIT included), then warm
        t0 = time.perf_counter()
        src = NumpySource({"input": x}, batch_size=batch, seed=None)
        if collector == "ort-cpu":
            hists, _, seen = collect_histograms(model, src, targets, cfg, types=types)
        else:
            hists, _, seen = collect_histograms_torch(model, src, targets, cfg, types=types, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        secs.append(time.perf_counter() - t0)
    amax = {k: compute_amax("entropy", h.counts, h.edges, h.amax) for k, h in hists.items()}
    peak = _status_mb("VmHWM")
    res = {"seconds": round(secs[1], 3), "seconds_cold": round(secs[0], 3), "samples_per_s": round(seen / secs[1], 1),
           "peak_rss_mb": round(peak, 1), "rss_growth_mb": round(peak - base, 1), "tensors": len(hists),
           "entropy_amax": amax, "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        res["cuda_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["cuda_device"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return res


def _child(cmd: list[str], timeout_s: float) -> dict:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped: longer than {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export(arch: str, size: int, tmp: Path) -> Path:
    """Export the random-weight torchvision-layout model at ``size`` x ``size``."""
    import torch

    from trtopt.export import export_onnx
    from trtopt.models import resnet

    torch.manual_seed(0)
    return export_onnx(getattr(resnet, arch)().eval(), torch.zeros(1, 3, size, size), tmp / f"{arch}_{size}.onnx")


def _amax_gap(rows: list[dict]) -> None:
    """Max relative entropy-amax difference of every row vs the ORT row of its setting."""
    ref = {(r["model"], r["samples"], r["image_size"]): r.get("entropy_amax") for r in rows
           if r["collector"] == "ort-cpu" and "entropy_amax" in r}
    for r in rows:
        base = ref.get((r["model"], r["samples"], r["image_size"]))
        amax = r.pop("entropy_amax", None)
        if base is not None and amax is not None and r["collector"] != "ort-cpu":
            r["max_rel_amax_diff_vs_ort"] = round(max(abs(amax[k] - base[k]) / base[k] for k in base), 6)


def _floor_ratio(rows: list[dict]) -> None:
    """``x_floor``: a collector's warm seconds over plain inference's on the same device and setting."""
    base = {(r["model"], r["samples"], r["image_size"], r["collector"][: -len("-floor")]): r.get("seconds")
            for r in rows if r["collector"].endswith("-floor")}
    for r in rows:
        f = base.get((r["model"], r["samples"], r["image_size"], r["collector"]))
        if f and r.get("seconds"):
            r["x_floor"] = round(r["seconds"] / f, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated ARCH:SAMPLES:IMAGE_SIZE:COLLECTORS runs")
    ap.add_argument("--batch", type=int, default=32, help="samples per source batch and per model call")
    ap.add_argument("--repeat", type=int, default=2, help="runs per collector; the fastest is reported")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--require-cuda", action="store_true", help="without a CUDA GPU, print why and exit 0 at once")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT})")
    ap.add_argument("--worker", nargs=3, metavar=("COLLECTOR", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, batch=args.batch)))
        return
    import torch

    cuda = torch.cuda.is_available()
    if args.require_cuda and not cuda:
        print("skipped: no CUDA GPU (torch.cuda.is_available() is False); nothing written")
        return
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for spec in args.runs.split(","):
            arch, n, size, collectors = spec.split(":")
            n, size = int(n), int(size)
            path = export(arch, size, tmp)
            data = tmp / f"{arch}_{size}_{n}.npy"
            np.save(data, np.random.default_rng(0).standard_normal((n, 3, size, size), dtype=np.float32))
            for collector in collectors.split("+"):
                row = {"model": arch, "samples": n, "image_size": size, "batch": args.batch, "collector": collector}
                if "cuda" in collector and not cuda:
                    row["skipped"] = "no CUDA"
                else:
                    cmd = [sys.executable, __file__, "--batch", str(args.batch), "--worker", collector, str(path),
                           str(data)]
                    tries = [_child(cmd, args.timeout_s) for _ in range(args.repeat)]
                    ok = [t for t in tries if "error" not in t]
                    row.update(min(ok, key=lambda t: t["seconds"]) if ok else tries[0])  # warm seconds
                    row["all_seconds"] = [t.get("seconds") for t in tries]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "entropy_amax"}), flush=True)
            data.unlink()
    _amax_gap(rows)
    _floor_ratio(rows)
    write(rows, cuda, args.out)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def _meta(cuda: bool) -> dict:
    import onnxruntime
    import torch

    return {"cpu": f"{_cpu_name()}, {os.cpu_count()} cores",
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cuda_device": torch.cuda.get_device_name(0) if cuda else "none (no CUDA on this machine)",
            "weights": "random (torch.manual_seed(0)); inputs standard normal (seed 0)",
            "timed": "histogram collection of the quantizable tensors (2048 bins), excluding export and loading",
            "note": "CPU timings come from a shared 2-core VM (other jobs running): indicative only"}


def write(rows: list[dict], cuda: bool, out: Path = OUT) -> None:
    """Print the table and write the JSON and markdown results."""
    from trtopt.fileio import atomic_write_json, atomic_write_text

    meta = _meta(cuda)
    atomic_write_json(out / "torch_collector.json", {"meta": meta, "rows": rows})
    lines = ["# Histogram collection: ONNX Runtime (CPU) vs the torch collector (CPU / CUDA)", "",
             f"CPU: {meta['cpu']}; CUDA device: {meta['cuda_device']}; torch {meta['torch']}, "
             f"onnxruntime {meta['onnxruntime']}. {meta['weights']}. Timed: {meta['timed']}.", "",
             "| model | samples | image | collector | s (warm) | s (cold) | samples/s | RSS growth MB | CUDA peak MB "
             "| amax diff vs ORT | x floor | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = r.get("skipped") or r.get("error") or ""
        lines.append(f"| {r['model']} | {r['samples']} | {r['image_size']} | {r['collector']} | {r.get('seconds', '')} "
                     f"| {r.get('seconds_cold', '')} | {r.get('samples_per_s', '')} | {r.get('rss_growth_mb', '')} "
                     f"| {r.get('cuda_max_memory_allocated_mb', '')} | {r.get('max_rel_amax_diff_vs_ort', '')} "
                     f"| {r.get('x_floor', '')} | {note} |")
    lines += ["", "Each collector ran in its own subprocess and collected twice: cold (first call, incl. kernel "
              "selection / JIT) and warm; the repeat with the fastest warm run is shown (all_seconds in the JSON). "
              "RSS growth = peak RSS (VmHWM, reset before collecting) minus the RSS after loading model and data. "
              "amax diff = largest relative difference of a tensor's entropy amax from the ONNX Runtime "
              "collector's on the same setting. x floor = warm seconds over plain inference's (the `-floor` rows: "
              "the same batches through the same runtime without intermediates or histograms). "
              "The CPU is a shared 2-core VM: CPU timings are indicative."]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(out / "torch_collector.md", text)


if __name__ == "__main__":
    main()
