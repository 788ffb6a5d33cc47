"""INT8 repair before float fallback on PP-OCRv4 rec / det: which repair pays, and NNCF side by side.

Rows per model (trtopt's Python API, the calibration data of ``bench/ppocr_common.py``):
all-INT8 without repair, each repair alone (all-INT8), the default guarded path without and with
the repairs, and NNCF 3.4's default PTQ (``nncf.quantize``, run with the interpreter of
``/tmp/repair/venv`` when it exists; skipped with a note otherwise). Task metrics against FP32 with
RapidOCR's own pre/post-processing: rec = lines read exactly as FP32 (30 held-out lines: rendered
+ scanned-page crops), det = FP32 boxes found again (IoU >= 0.5); plus layers kept in float and
CPU seconds (process time of this process, so a shared machine's other load is not counted).

Run:  python bench/int8_repair.py [--models rec,det]
Writes bench/results/repair/results.json and results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ppocr_common as P

ROOT = Path(__file__).resolve().parents[1]
NNCF_PY = Path("/tmp/repair/venv/bin/python")
# NNCF quantizes weights per-tensor below opset 13 (no per-axis QuantizeLinear): the model goes in at opset 13
_NNCF = """
import sys, numpy as np, onnx, nncf
from onnx import version_converter
src, calib, out = sys.argv[1:4]
x = np.load(calib)
ds = nncf.Dataset([x[i:i + 1] for i in range(len(x))], lambda s: {"x": s})
m = onnx.load(src)
if next(o.version for o in m.opset_import if o.domain in ('', 'ai.onnx')) < 13:
    m = version_converter.convert_version(m, 13)
onnx.save(nncf.quantize(m, ds, subset_size=len(x)), out)
"""


def _float_layers(model: onnx.ModelProto) -> tuple[int, int]:
    """(weighted layers without Q/DQ on their weight, weighted layers) of a Q/DQ model."""
    from trtopt.onnx.graph import producers
    from trtopt.onnx.ops import WEIGHTED_OPS

    prod = producers(model.graph)
    layers = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    q = [n for n in layers
         if len(n.input) > 1 and n.input[1] in prod and prod[n.input[1]].op_type == "DequantizeLinear"]
    return len(layers) - len(q), len(layers)


def _nncf(kind: str, path: Path, calib: dict[str, np.ndarray], work: Path, done) -> dict[str, Any]:
    """NNCF 3.4 default PTQ of the same model on the same calibration data (its own venv), or a note."""
    out: dict[str, dict[str, Any]] = {}
    if NNCF_PY.is_file():
        np.save(work / "calib.npy", calib["x"])
        f = work / f"{kind}.nncf.onnx"
        t0 = time.time()
        p = subprocess.run([str(NNCF_PY), "-c", _NNCF, str(path), str(work / "calib.npy"), str(f)],
                           capture_output=True, text=True)
        if p.returncode == 0:
            fl, total = _float_layers(onnx.load(str(f)))
            out["NNCF 3.4 default PTQ"] = {"path": f, "float_layers": fl, "layers": total,
                                           "wall_s": round(time.time() - t0, 1)}
            done("NNCF 3.4 default PTQ", out["NNCF 3.4 default PTQ"])
        else:
            out["NNCF 3.4 default PTQ"] = {"note": (p.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    else:
        out["NNCF 3.4 default PTQ"] = {"note": f"skipped: {NNCF_PY} not found (python3 -m venv /tmp/repair/venv; "
                                               "pip install nncf==3.4.0 ...)"}
    return out


def variants(kind: str, path: Path, calib: dict[str, np.ndarray], work: Path, done) -> dict[str, dict[str, Any]]:
    """Build every variant of one model (``done(name, row)`` after each); file, float layers, CPU s, repair counts."""
    from trtopt.calib.collect import calibrate
    from trtopt.calib.source import NumpySource
    from trtopt.quant import QuantizeConfig, quantize
    from trtopt.quant.api import CalibData

    t0 = time.process_time()
    table = calibrate(str(path), NumpySource(calib, batch_size=32, seed=0))
    calib_s = time.process_time() - t0
    rows = {"int8 (no repair)": dict(fidelity_guard=False), "int8 + bias": dict(fidelity_guard=False, repair=("bias",)),
            "guard + bias": dict(repair=("bias",)), "guard (no repair)": dict()}
    out: dict[str, dict[str, Any]] = {}
    for name, kw in rows.items():
        if name == "guard + bias":  # NNCF before the slow guarded rows
            out.update(_nncf(kind, path, calib, work, done))
        t0 = time.process_time()
        res = quantize(str(path), table, QuantizeConfig(**kw), CalibData(calib))
        secs = time.process_time() - t0 + calib_s
        f = work / f"{kind}.{name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', 'p')}.onnx"
        onnx.save(res.model, str(f))
        fl, total = _float_layers(res.model)
        out[name] = {"path": f, "float_layers": fl, "layers": total, "cpu_s": round(secs, 1),
                     "repair": None if res.repair is None else res.repair.summary()}
        print(f"{kind}: {name}: {fl} float layers, {secs:.0f} CPU s", flush=True)
        done(name, out[name])
    return out


def write(res: dict[str, Any], out: Path) -> None:
    """results.json + results.md (after every model, so a long run keeps what it measured)."""
    from trtopt.benchmark.report import jsonable
    from trtopt.fileio import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", jsonable(res))
    md = ["# INT8 repair on PP-OCRv4", "", f"Created {res['created']} on {res['machine']}; "
          f"`python bench/int8_repair.py {res['argv']}`.", "",
          "rec: lines read exactly as FP32; det: FP32 boxes found (IoU >= 0.5). CPU s: process time of "
          "calibration + quantization (+ repair, guard).", "",
          "| model | variant | vs FP32 (%) | cosine | float layers | CPU s |", "|---|---|---|---|---|---|"]
    for kind, vs in res["models"].items():
        for name, v in vs.items():
            if "note" in v:
                md.append(f"| {kind} | {name} | {v['note']} | | | |")
                continue
            secs = v.get("cpu_s", f"{v.get('wall_s')} (wall)")
            md.append(f"| {kind} | {name} | {v['metric']} | {v.get('cosine')} | {v['float_layers']} / {v['layers']} "
                      f"| {secs} |")
    atomic_write_text(out / "results.md", "\n".join(md) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="rec,det")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "repair")
    args = ap.parse_args()
    why = P.available()
    if why:
        print(f"skipped: {why}")
        return 0
    data = P.build_dataset()
    paths = P.model_paths()
    chars = P.characters(paths["rec"])
    ref = P.reference(data, paths["det"], paths["rec"], chars)
    res: dict[str, Any] = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "machine": f"{platform.processor() or platform.machine()}, "
                                      f"{len(os.sched_getaffinity(0))} cores (shared)",
                           "argv": " ".join(sys.argv[1:]), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            calib = data.rec_calib if kind == "rec" else data.det_calib
            vs: dict[str, dict[str, Any]] = {}
            res["models"][kind] = vs

            def done(name: str, v: dict[str, Any], kind: str = kind, vs: dict[str, dict[str, Any]] = vs) -> None:
                if kind == "rec":
                    r = P.evaluate_rec(data, ref, v["path"], chars)
                    v.update(metric=r["lines_exact_vs_fp32"], lines=r["lines"], cosine=r["fidelity"].get("cosine"))
                else:
                    r = P.evaluate_det(data, ref, v["path"])
                    v.update(metric=r["box_recall"], fp32_boxes=r["fp32_boxes"], cosine=r["fidelity"].get("cosine"))
                v["path"] = Path(v["path"]).name
                vs[name] = v
                print(kind, name, v.get("metric"), v.get("float_layers"), flush=True)
                write(res, args.out)

            vs.update(variants(kind, paths[kind], calib, Path(tmp), done))
            write(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
