"""Speed and peak memory: trtopt entropy calibration vs ONNX Runtime quantize_static(Entropy).

Same model file, same calibration samples, same batch size; each measurement runs in its own
subprocess so peak RSS (``ru_maxrss``) belongs to that tool alone. The parent polls each child's
RSS and stops it above ``--rss-limit-gb`` (the machine is shared); a stopped run is reported.

Run:  python bench/calib_speed_memory.py [--runs resnet18:256:224,resnet50:256:112,...]
      (each run is ARCH:SAMPLES:IMAGE_SIZE[:TOOL+TOOL], tools default trtopt+onnxruntime+inference;
      ``inference`` times plain ONNX Runtime inference of the same samples: the floor of any
      calibrator that runs the model in ONNX Runtime)
Writes bench/results/calib/speed_memory.json and speed_memory.md.
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


def _rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak over execve)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024.0


def worker(tool: str, model: str, data: str, batch: int) -> dict:
    """Run one tool in this process and return timings + peak RSS."""
    import onnx  # noqa: F401  (imports before the baseline RSS reading)
    import onnxruntime  # noqa: F401

    x = np.load(data)
    base = _rss_mb()
    t0 = time.perf_counter()
    out_model = str(Path(data).with_suffix(f".{tool}.onnx"))
    if tool == "inference":  # the floor of any ONNX Runtime-based calibrator: plain inference of the samples
        from trtopt.onnx.exec import make_session

        sess = make_session(model)
        for s in range(0, len(x), 8):  # trtopt's run_batch_size
            sess.run(None, {"input": x[s : s + 8]})
        t_cal, n_tensors = None, None
    elif tool == "trtopt":
        from trtopt.calib import CalibrationConfig, NumpySource, calibrate
        from trtopt.onnx.io import save_onnx
        from trtopt.quant import quantize_qdq

        table = calibrate(model, NumpySource({"input": x}, batch_size=batch, seed=None), CalibrationConfig())
        t_cal = time.perf_counter() - t0
        save_onnx(quantize_qdq(model, table).model, out_model)
        n_tensors = len(table)
    else:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(range(0, len(x), batch))

            def get_next(self):
                s = next(self.it, None)
                return None if s is None else {"input": x[s : s + batch]}

        quantize_static(model, out_model, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Entropy, extra_options={"ActivationSymmetric": True})
        t_cal = None
        n_tensors = None
    total = time.perf_counter() - t0
    return {"tool": tool, "seconds_total": round(total, 2), "seconds_calibration": None if t_cal is None else
            round(t_cal, 2), "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(base, 1),
            "calibrated_tensors": n_tensors}


def _poll(cmd: list[str], limit_mb: float, timeout_s: float) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0, peak, reason = time.time(), 0.0, None
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) / 1024.0
            peak = max(peak, rss)
        except (OSError, StopIteration):
            pass
        if peak > limit_mb:
            reason = f"stopped: RSS above {limit_mb:.0f} MB"
        elif time.time() - t0 > timeout_s:
            reason = f"stopped: longer than {timeout_s:.0f} s"
        if reason:
            proc.kill()
            proc.wait()
            return {"error": reason, "seconds_total": round(time.time() - t0, 1), "peak_rss_mb": round(peak, 1)}
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(out.strip().splitlines()[-1])


def export(arch: str, size: int, tmp: Path) -> Path:
    import torch

    from trtopt.export import export_onnx
    from trtopt.models import resnet

    torch.manual_seed(0)
    model = getattr(resnet, arch)().eval()
    return export_onnx(model, torch.zeros(1, 3, size, size), tmp / f"{arch}.onnx")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="resnet18:256:224,resnet50:256:112,resnet50:64:224,"
                                      "resnet50:256:224:trtopt+inference",
                    help="comma-separated ARCH:SAMPLES:IMAGE_SIZE[:TOOL+TOOL] runs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the fastest is reported")
    ap.add_argument("--rss-limit-gb", type=float, default=18.0)
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--worker", nargs=3, metavar=("TOOL", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, batch=args.batch)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for spec in args.runs.split(","):
            arch, n, size, *tools = spec.split(":")
            n, size = int(n), int(size)
            tools = tools[0].split("+") if tools else ["trtopt", "onnxruntime", "inference"]
            path = export(arch, size, tmp)
            data = tmp / f"{arch}_{size}_{n}_calib.npy"
            rng = np.random.default_rng(0)
            np.save(data, rng.standard_normal((n, 3, size, size), dtype=np.float32))
            for tool in tools:  # trtopt first: ORT's peak can push others into swap
                cmd = [sys.executable, __file__, "--batch", str(args.batch), "--worker", tool, str(path), str(data)]
                tries = [_poll(cmd, args.rss_limit_gb * 1024, args.timeout_s) for _ in range(args.repeat)]
                ok = [t for t in tries if "error" not in t]
                # shared 2-core machine: keep the fastest repeat (least disturbed), report all times
                res = min(ok, key=lambda t: t["seconds_total"]) if ok else tries[0]
                res["all_seconds"] = [t.get("seconds_total") for t in tries]
                res.update({"model": arch, "samples": n, "image_size": size, "batch": args.batch, "tool": tool})
                print(json.dumps(res), flush=True)
                rows.append(res)
            data.unlink()
    write(rows, args)


def write(rows: list[dict], args: argparse.Namespace) -> None:
    from trtopt.fileio import atomic_write_json, atomic_write_text

    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Linux; shared with other jobs",
            "python": platform.python_version(), "onnxruntime": __import__("onnxruntime").__version__,
            "weights": "random (torch.manual_seed(0)); inputs standard normal (seed 0)",
            "trtopt": "calibrate(entropy, 2048 bins, streaming) + quantize_qdq + save",
            "onnxruntime_call": "quantize_static(QDQ, per_channel, QInt8, CalibrationMethod.Entropy, "
                                "ActivationSymmetric) incl. its own Q/DQ insertion and save"}
    atomic_write_json(OUT / "speed_memory.json", {"meta": meta, "rows": rows})
    lines = ["# Calibration speed and peak memory (trtopt entropy vs ONNX Runtime Entropy)", "",
             f"{meta['machine']}; {meta['weights']}.", "",
             "| model | samples | image | tool | total s | peak RSS MB | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['samples']} | {r['image_size']} | {r['tool']} "
                     f"| {r.get('seconds_total', '')} | {r.get('peak_rss_mb', '')} | {r.get('error', '')} |")
    by = {(r["model"], r["samples"], r["image_size"], r["tool"]): r for r in rows}
    lines.append("")
    for m, n, size in dict.fromkeys((r["model"], r["samples"], r["image_size"]) for r in rows):
        a, b = by.get((m, n, size, "trtopt")), by.get((m, n, size, "onnxruntime"))
        if a and b and "error" not in a and "error" not in b:
            lines.append(f"- {m}, {n} samples at {size}x{size}: trtopt {b['seconds_total'] / a['seconds_total']:.1f}x "
                         f"faster, {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x the peak memory of ONNX Runtime")
            inf = by.get((m, n, size, "inference"))
            if inf and "error" not in inf:
                lines.append(f"  - plain ONNX Runtime inference of the same samples takes {inf['seconds_total']} s: "
                             f"no ONNX Runtime-based calibrator can be more than "
                             f"{b['seconds_total'] / inf['seconds_total']:.1f}x faster than quantize_static here; "
                             f"trtopt spends {a['seconds_total'] - inf['seconds_total']:.1f} s beyond it "
                             "(histograms, loading, Q/DQ insertion, saving)")
    for m, n, size in dict.fromkeys((r["model"], r["samples"], r["image_size"]) for r in rows):
        if (m, n, size, "onnxruntime") not in by and (m, n, size, "trtopt") in by:
            lines.append(f"- {m}, {n} samples at {size}x{size}: trtopt only. ONNX Runtime keeps every batch's "
                         "activations (7.6 GB for ResNet-50 at 64 samples of 224x224), so 256 samples would need "
                         "~4x that, beyond this 24 GiB machine; it is measured at 64 samples and at 112x112 instead.")
    lines += ["", "Each tool ran in its own subprocess (peak RSS = VmHWM); the fastest of the repeats is shown "
              "(all_seconds in the JSON). trtopt time includes calibration, Q/DQ insertion and saving."]
    atomic_write_text(OUT / "speed_memory.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
