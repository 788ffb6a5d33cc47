"""Peak memory and wall time of each stage on a real 2.15 GB external-data model.

The model is the one of ``tests/unit/onnx/test_external_data.py``: ``y = (x @ w1) @ w2`` with two
16384 x 16384 float32 weights (2.15 GB) in a ``.onnx.data`` file beside it. Each stage runs in its
own Python process, so its peak RSS is its own: the child reports its VmHWM after the stage's
transform and after its save (the ONNX Runtime helper process that ``save_onnx`` verifies a file
in is a process of its own and not counted; ``ort`` measures such a session).

Stages: ``calibrate`` (minmax on 2 samples), ``quantize`` (``quantize_qdq`` + ``save_onnx``),
``fp16`` (``convert_fp16`` + ``save_onnx``), ``ort`` (open the Q/DQ model in ONNX Runtime by path
and run one sample), ``checker`` (``onnx.checker.check_model(full_check=True)`` on the source).

Run:  python bench/memory_large_model.py [--dir /tmp/trtopt-mem] [--out bench/results/memory]
Writes OUT/large_model.json and OUT/large_model.md (needs ~7 GB of disk in --dir, removed after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "memory"
DIM = 1 << 14
VALUE = 1e-4
STAGES = ("checker", "calibrate", "quantize", "fp16", "ort")


def _hwm_mb() -> float:
    """Peak RSS of this process (VmHWM, MB)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024.0


def stage(name: str, folder: Path) -> dict:
    """Run one stage in this process; returns its wall times (s) and peak RSS (MB) at each step."""
    import onnx

    from trtopt.calib import CalibrationConfig, CalibrationTable, NumpySource, calibrate
    from trtopt.onnx.exec import make_session
    from trtopt.onnx.io import save_onnx
    from trtopt.quant import QuantizeConfig, convert_fp16, quantize_qdq

    src = folder / "big.onnx"
    x = np.ones((2, DIM), np.float32)
    rec: dict = {"baseline_mb": _hwm_mb()}
    t0 = time.perf_counter()
    if name == "checker":
        onnx.checker.check_model(str(src), full_check=True)
    elif name == "calibrate":
        table = calibrate(src, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
        table.save_json(folder / "big.calib.json")
    elif name == "ort":
        out = make_session(folder / "q.onnx").run(None, {"x": x[:1]})[0]
        rec["output_mean"] = float(out.mean())
    else:
        model = (quantize_qdq(src, CalibrationTable.load_json(folder / "big.calib.json"), QuantizeConfig())
                 if name == "quantize" else convert_fp16(src)).model
        rec["transform_s"], rec["transform_peak_mb"] = time.perf_counter() - t0, _hwm_mb()
        save_onnx(model, folder / ("q.onnx" if name == "quantize" else "f.onnx"))
    rec["seconds"], rec["peak_mb"] = time.perf_counter() - t0, _hwm_mb()
    return rec


def run_stage(name: str, folder: Path) -> dict:
    """Run ``stage(name)`` in a child process; adds the process's wall time (s, imports included)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, __file__, "--stage", name, "--dir", str(folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    rec = json.loads(out.strip().splitlines()[-1])
    rec["process_s"] = wall
    return rec


def write_report(doc: dict, out: Path) -> None:
    """Write ``out/large_model.json`` and ``out/large_model.md`` (the stage table)."""
    from trtopt.fileio import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "large_model.json", doc)
    lines = ["# Peak memory per stage: a real 2.15 GB external-data model", "",
             f"{doc['model']} ({doc['model_mb']:.0f} MB). {doc['machine']} (1-min load average "
             f"{doc['load_avg'][0]:.1f} at the start, {doc['load_avg'][1]:.1f} at the end: wall times scale with it); "
             f"Python {doc['python']}, onnx {doc['onnx']}, ONNX Runtime {doc['onnxruntime']}. Each stage in its own "
             "process; peak = VmHWM of that process.", "",
             "| stage | peak RSS (MB) | x model | after transform, before save (MB) | wall (s) |",
             "|---|---|---|---|---|"]
    for name, r in doc["stages"].items():
        after = f"{r['transform_peak_mb']:.0f}" if "transform_peak_mb" in r else "-"
        lines.append(f"| {name} | {r['peak_mb']:.0f} | {r['peak_x_model']:.2f} | {after} | {r['seconds']:.1f} |")
    lines += ["", f"Command: `{doc['command']}`"]
    atomic_write_text(out / "large_model.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Write the model, run every stage in its own process, print and save the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.stage, args.dir)))
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from _helpers.external_data import write_external_data_model

    load0 = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="trtopt-mem-", dir=args.dir))
    try:
        write_external_data_model(folder / "big.onnx", DIM, VALUE)
        size_mb = (folder / "big.onnx.data").stat().st_size / 2**20
        rows = {}
        for name in STAGES:
            rows[name] = run_stage(name, folder)
            rows[name]["peak_x_model"] = rows[name]["peak_mb"] / size_mb
            print(f"{name:10s} peak {rows[name]['peak_mb']:8.0f} MB ({rows[name]['peak_x_model']:.2f}x model)  "
                  f"{rows[name]['seconds']:6.1f} s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    import onnx
    import onnxruntime

    doc = {"model": f"y = (x @ w1) @ w2, two {DIM}x{DIM} float32 weights as external data",
           "model_mb": size_mb, "stages": rows,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, Linux; "
                      "shared with other jobs",
           "python": platform.python_version(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
           "load_avg": [load0, os.getloadavg()[0]], "command": "python bench/memory_large_model.py"}
    write_report(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
