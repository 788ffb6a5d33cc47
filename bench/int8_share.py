"""How much of each model's compute really runs in INT8: in the ONNX graph and in a TensorRT-RTX engine.

"Layers kept in float" counts layers, not compute. For each workload's default INT8 variant this
prints and saves:

* the ONNX graph's share of Conv/ConvTranspose/Gemm/MatMul MACs computed in INT8 (both data inputs
  from an INT8 DequantizeLinear; :func:`trtopt.macshare.model_mac_share`), per op type, with the
  largest float layers;
* the share the real TensorRT-for-RTX builder (on this CPU, ahead of time) compiled INT8: its
  ``Layers:`` dump, each compute layer weighted by the MACs of the ONNX nodes it fuses, at the
  optimization profile's opt shapes (``manifest["compiled"]``).

Workloads: the digits demo's INT8 variant and the ResNet-18 / MobileNetV2 recipes (bench/recipes/,
random weights; variants fp32 + int8 only, one short timing), and PP-OCRv4 det and rec (the models
shipped in rapidocr-onnxruntime, ``trtopt calibrate`` + ``trtopt quantize`` as bench/ppocr_int8.py
makes its default INT8 variant; needs the ``ocr`` extra).

Run:  python bench/int8_share.py [--only digits,resnet18,mobilenet_v2,ppocr_det,ppocr_rec] [--out DIR]
      [--merge OTHER/results.json]
Writes bench/results/int8_share/results.json and results.md. About 5-10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = ROOT / "bench" / "results" / "int8_share"
WORKLOADS = ("digits", "resnet18", "mobilenet_v2", "ppocr_det", "ppocr_rec")


def _onnx_figures(path: Path, feeds: dict[str, np.ndarray] | None = None,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    import onnx

    from trtopt.macshare import model_mac_share

    share = model_mac_share(onnx.load(str(path), load_external_data=False), feeds=feeds, shapes=shapes)
    return share.to_json(top=5)


def _engine_figures(path: Path, work: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Build ``path`` with TensorRT-for-RTX at ``shapes`` (min = opt = max) and read its compiled report."""
    from trtopt.backends.tensorrt import BuildConfig, build_engine
    from trtopt.backends.tensorrt.profiles import parse_shapes
    from trtopt.optional import is_installed

    if not is_installed("tensorrt_rtx"):
        return {"status": "not installed"}
    prof = parse_shapes([f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items()])
    t0 = time.perf_counter()
    res = build_engine(path, BuildConfig(backend="tensorrt-rtx", precision="int8", shapes=prof),
                       engine_dir=work / "engines", rebuild=True)
    c = res.data["compiled"]
    fall = sorted((n for n in c["nodes"] if n.get("compiled") not in ("INT8",) and n.get("macs")),
                  key=lambda n: -n["macs"])[:5]
    return {"status": "ok", "build_s": round(time.perf_counter() - t0, 1), "summary": c["summary"],
            "int8_mac_share": c["int8_mac_share"], "int8_macs": c["int8_macs"], "total_macs": c["total_macs"],
            "compute_precisions": c["compute_precisions"],
            "top_float": [{"node": n["node"], "op": n["op"], "compiled": n["compiled"], "macs": n["macs"]}
                          for n in fall]}


def _recipe(name: str, work: Path) -> dict[str, Any]:
    """Run a recipe with variants fp32 + int8 and a short timing; its report carries the INT8 share."""
    from trtopt.pipeline import run_recipe

    toml = "digits_demo" if name == "digits" else name  # digits: the recipe `trtopt demo` runs
    data = tomllib.loads((ROOT / "bench" / "recipes" / f"{toml}.toml").read_text())
    data.setdefault("recipe", {})["variants"] = ["fp32", "int8"]
    data.setdefault("bench", {}).update(batch_sizes=[1], min_duration_s=0.3, warmup=1)
    t0 = time.perf_counter()
    res = run_recipe(data, work / name)
    row = next(v for v in res.report.variants if v.name == "int8")
    macs = row.macs.to_json(top=5) if row.macs is not None else None
    eng = (row.engine.details if row.engine is not None else {}) or {}
    return {"source": f"recipe {name} (variants fp32, int8)", "seconds": round(time.perf_counter() - t0, 1),
            "onnx": macs, "engine": {"status": row.engine.status if row.engine else "none",
                                     "text": row.engine.text if row.engine else "",
                                     "int8_mac_share": eng.get("int8_mac_share")}}


def _ppocr(kind: str, work: Path) -> dict[str, Any]:
    """``trtopt calibrate`` + ``trtopt quantize`` (the default INT8 variant of bench/ppocr_int8.py)."""
    import ppocr_common as P
    from ppocr_int8 import trtopt

    why = P.available()
    if why:
        return {"status": "skipped", "reason": why}
    data = P.build_dataset(scan_lines=False, eval_pages=0, eval_lines=0)
    calib = data.det_calib if kind == "det" else data.rec_calib
    src = P.model_paths()[kind]
    npz = work / f"{kind}.calib.npz"
    np.savez(npz, **calib)
    t0 = time.perf_counter()
    ok, why = trtopt("calibrate", str(src), "--data", str(npz), "--out", str(work / f"cal-{kind}"))
    if not ok:
        return {"status": "failed", "reason": f"calibrate: {why}"}
    dest = work / f"{kind}.int8.onnx"
    ok, note = trtopt("quantize", str(src), "--calib", str(work / f"cal-{kind}" / f"{src.stem}.calib.json"),
                      "--out", str(dest))
    if not ok:
        return {"status": "failed", "reason": f"quantize: {note}"}
    shape = tuple(int(d) for d in (1, *next(iter(calib.values())).shape[1:]))
    shapes = {"x": shape}
    return {"source": f"PP-OCRv4 {kind} ({src.name}), trtopt calibrate + quantize", "note": note,
            "seconds": round(time.perf_counter() - t0, 1), "onnx": _onnx_figures(dest, shapes=shapes),
            "engine": _engine_figures(dest, work, shapes)}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def render(res: dict[str, Any]) -> str:
    lines = ["# INT8 share of compute", "", "Share of the Conv/ConvTranspose/Gemm/MatMul multiply-accumulates "
             "(MACs) computed in INT8, for each workload's default INT8 variant: in the ONNX graph (both data "
             "inputs from an INT8 DequantizeLinear) and as the TensorRT-for-RTX 1.7 builder compiled it (its "
             "layer dump, each compute layer weighted by the MACs of the ONNX nodes it fuses, at the opt shapes).",
             "", "| workload | shapes | MACs | INT8 in ONNX | by op | compiled INT8 (RTX engine) | largest float "
             "layers (ONNX) |", "|---|---|---|---|---|---|---|"]
    from trtopt.onnx.macs import format_macs

    for name, r in res["workloads"].items():
        o = r.get("onnx")
        if not o:
            lines.append(f"| {name} | — | — | {r.get('status', 'failed')}: {r.get('reason', '')} | | | |")
            continue
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in o["shapes"].items())
        ops = ", ".join(f"{k} {_pct(v['int8_macs'] / v['total_macs'] if v['total_macs'] else None)}"
                        for k, v in o["by_op"].items())
        top = "; ".join(f"{t['node']} ({t['op_type']}) {_pct(t['macs'] / o['total_macs'])}" for t in o["top_float"][:3])
        eng = r.get("engine") or {}
        lines.append(f"| {name} | {shapes} | {format_macs(o['total_macs'])} | {_pct(o['share'])} | {ops} | "
                     f"{_pct(eng.get('int8_mac_share'))} | {top or '—'} |")
    lines += ["", f"Command: `python bench/int8_share.py`; {res['created']}; "
              "python " + res["python"] + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT.relative_to(ROOT)})")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="results.json of another run (e.g. made in parallel with --only and --out): its rows "
                         "join these")
    args = ap.parse_args()
    only = [w for w in args.only.split(",") if w]
    out_dir: Path = args.out
    out: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "python": sys.version.split()[0], "workloads": {}}
    prev = out_dir / "results.json"
    if prev.is_file() and set(only) != set(WORKLOADS):  # --only refreshes those rows and keeps the others
        out["workloads"] = json.loads(prev.read_text()).get("workloads", {})
    for other in args.merge:
        out["workloads"].update(json.loads(other.read_text()).get("workloads", {}))
    with tempfile.TemporaryDirectory(prefix="int8share-") as tmp:
        work = Path(tmp)
        for w in only:
            print(f"[int8_share] {w} ...", flush=True)
            r = _ppocr(w.split("_")[1], work) if w.startswith("ppocr") else _recipe(w, work)
            out["workloads"][w] = r
            o = r.get("onnx") or {}
            print(f"[int8_share] {w}: ONNX {_pct(o.get('share'))}, engine "
                  f"{_pct((r.get('engine') or {}).get('int8_mac_share'))}", flush=True)
    out["workloads"] = {k: out["workloads"][k] for k in WORKLOADS if k in out["workloads"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    (out_dir / "results.md").write_text(render(out))
    print(render(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
