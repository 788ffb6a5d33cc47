"""PP-OCRv4 det + rec through trtopt: FP32 / default INT8 / entropy / minmax / percentile / mse / FP16 / INT8+FP16.

Real third-party models (Paddle2ONNX exports shipped in ``rapidocr-onnxruntime==1.4.4``) made into
variants with trtopt's CLI exactly as a user would (``trtopt calibrate`` [``--method M``],
``trtopt quantize --calib`` / ``--fp16`` / ``--calib --fp16-rest``), then judged with RapidOCR's
own pre/post-processing (``bench/ppocr_common.py``): det = percent of FP32's boxes found again
(IoU >= 0.5), rec = percent of lines read exactly as FP32 (and as the rendered truth), plus
fidelity (cosine, per-position agreement, trtopt's default-tolerance verdict). A variant trtopt
refuses to build is a row with its one-line reason, not a crash.

Run:  python bench/ppocr_int8.py [--opset13] [--methods default,entropy,minmax,percentile,mse]
Needs the ``ocr`` extra (rapidocr-onnxruntime 1.4.4, scikit-image). Writes
bench/results/ppocr/results.json and results.md. About 3-5 minutes on 2 CPU cores.

``--opset13`` upgrades the FP32 models to opset 13 with ``onnx.version_converter`` before trtopt
sees them (outputs unchanged); without it, trtopt gets the opset-12 files as shipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ppocr_common as P

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("default", "entropy", "minmax", "percentile", "mse")


def trtopt(*args: str, timeout: float = 900) -> tuple[bool, str]:
    """Run the trtopt CLI; return (ok, last stderr/stdout line as the reason)."""
    cmd = [sys.executable, "-m", "trtopt.cli.main", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s: trtopt {' '.join(args[:2])}"
    lines = [ln.strip() for ln in (p.stderr + "\n" + p.stdout).splitlines() if ln.strip()]
    if p.returncode == 0:  # report what the fidelity guard did (the default path), else the last line
        text = " ".join((p.stderr or "").split())
        m = re.search(r"kept (\d+) most sensitive layer", text)
        return True, f"fidelity guard kept {m.group(1)} layer(s) in float" if m else \
            ("fidelity guard: all-INT8 within tolerance" if "within tolerance" in text else "")
    return False, (lines[-1] if lines else f"exit {p.returncode}")[:400]


def prepare(src: Path, dst: Path, opset13: bool) -> Path:
    """Copy the FP32 model, upgraded to opset 13 when asked."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    if opset13:
        m = version_converter.convert_version(m, 13)
    onnx.save(m, str(dst))
    return dst


def build_variants(model: Path, calib: Path, work: Path, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Make every variant of one model with the trtopt CLI; each entry has path or reason."""
    out: dict[str, dict[str, Any]] = {}
    tables: dict[str, Path] = {}
    stem = model.stem
    for m in methods:
        d = work / f"calib-{m}"
        t0 = time.perf_counter()
        ok, why = trtopt("calibrate", str(model), "--data", str(calib), "--out", str(d),
                         *([] if m == "default" else ["--method", m]))
        secs = round(time.perf_counter() - t0, 1)
        name = "int8-default" if m == "default" else f"int8-{m}"
        if not ok:
            out[name] = {"status": "failed", "reason": f"calibrate: {why}", "calib_s": secs}
            continue
        tables[m] = d / f"{stem}.calib.json"
        dest = work / f"{stem}.{name}.onnx"
        # the method rows show what each calibration gives on its own (no fidelity guard); the default
        # row is the default path a user gets: auto calibration + the guard
        guard = [] if m == "default" else ["--no-fidelity-guard"]
        ok, why = trtopt("quantize", str(model), "--calib", str(tables[m]), *guard, "--out", str(dest))
        out[name] = {"status": "ok", "path": dest, "calib_s": secs, "note": why} if ok else \
            {"status": "failed", "reason": f"quantize: {why}", "calib_s": secs}
        if m == "default":
            dest = work / f"{stem}.int8-auto-noguard.onnx"
            ok, why = trtopt("quantize", str(model), "--calib", str(tables[m]), "--no-fidelity-guard", "--out",
                             str(dest))
            out["int8-auto-noguard"] = {"status": "ok", "path": dest} if ok else \
                {"status": "failed", "reason": f"quantize: {why}"}
    dest = work / f"{stem}.fp16.onnx"
    ok, why = trtopt("quantize", str(model), "--fp16", "--out", str(dest))
    out["fp16"] = {"status": "ok", "path": dest} if ok else {"status": "failed", "reason": f"quantize --fp16: {why}"}
    dest = work / f"{stem}.int8-fp16.onnx"
    if "default" not in tables:
        out["int8-fp16"] = {"status": "failed", "reason": "no default calibration table (see int8-default)"}
    else:
        ok, why = trtopt("quantize", str(model), "--calib", str(tables["default"]), "--fp16-rest", "--out", str(dest))
        out["int8-fp16"] = {"status": "ok", "path": dest, "note": why} if ok else \
            {"status": "failed", "reason": f"quantize --fp16-rest: {why}"}
    return out


def _evaluate(kind: str, fn, variants: dict[str, dict[str, Any]]) -> None:
    for v in variants.values():
        if v["status"] != "ok":
            continue
        try:
            v.update(fn(v["path"]))
        except Exception as exc:  # a variant ONNX Runtime cannot run is a result, not a crash
            v.update(status="failed", reason=f"{kind} evaluation: {type(exc).__name__}: {str(exc)[:300]}")
        v["path"] = Path(v["path"]).name  # the variant files live in a temp folder


def _cell(v: dict[str, Any], key: str) -> str:
    if v.get("status") != "ok":
        return "failed"
    val = v.get(key)
    return "—" if val is None else f"{val:.1f}"


def _fid_cell(v: dict[str, Any]) -> str:
    f = v.get("fidelity") or {}
    if v.get("status") != "ok" or "cosine" not in f:
        return "—"
    s = f"cos {f['cosine']:.4f}"
    if f.get("position_agreement") is not None:
        s += f", pos agree {f['position_agreement']:.1f}%"
    return s + (" ✗" if f.get("tolerance_violations") else " ok")


def render(res: dict[str, Any]) -> str:
    order = ["fp32", "int8-default", "int8-auto-noguard", "int8-entropy", "int8-minmax", "int8-percentile",
             "int8-mse", "fp16", "int8-fp16"]
    det, rec = res["det"]["variants"], res["rec"]["variants"]
    lines = ["# PP-OCRv4 through trtopt: task metrics and fidelity", "",
             f"Models: rapidocr-onnxruntime 1.4.4 `{P.DET_NAME}`, `{P.REC_NAME}` "
             f"({'upgraded to opset 13 by this script' if res['opset13'] else 'as shipped, opset 12'}). "
             f"Created {res['created']} on {res['machine']}; `python bench/ppocr_int8.py{res['argv']}`.", "",
             f"Evaluation: det on {len(res['data']['det_images'])} images ({', '.join(res['data']['det_images'])}), "
             f"FP32 finds {res['fp32']['boxes']} boxes; rec on {res['fp32']['lines']} lines "
             f"({res['data']['rendered_lines']} rendered with ground truth, the rest cropped from the scans by FP32's "
             f"boxes); FP32 reads {res['fp32']['lines_exact_vs_truth']}% of the rendered lines exactly. Calibration: "
             f"{res['data']['det_calib']} rendered pages (det), {res['data']['rec_calib']} rendered lines (rec), "
             "disjoint from the evaluation data.", "",
             "| variant | det: FP32 boxes found % | det boxes | det fidelity | rec: lines = FP32 % | "
             "rec: lines = truth % | rec empty lines | rec fidelity |",
             "|---|---|---|---|---|---|---|---|"]
    for name in order:
        d, r = det.get(name, {"status": "n/a"}), rec.get(name, {"status": "n/a"})
        lines.append(f"| {name} | {_cell(d, 'box_recall')} | {d.get('boxes', '—')} | {_fid_cell(d)} | "
                     f"{_cell(r, 'lines_exact_vs_fp32')} | {_cell(r, 'lines_exact_vs_truth')} | "
                     f"{r.get('empty_lines', '—')} | {_fid_cell(r)} |")
    notes = [(k, n, v["note"]) for k, vs in (("det", det), ("rec", rec)) for n, v in vs.items() if v.get("note")]
    if notes:
        lines += ["", "Default path (`trtopt quantize` with its fidelity guard on the calibration data):", ""]
        lines += [f"- {k} {n}: {why}" for k, n, why in notes]
    fails = [(k, n, v["reason"]) for k, vs in (("det", det), ("rec", rec)) for n, v in vs.items()
             if v.get("status") != "ok"]
    if fails:
        lines += ["", "Variants trtopt could not build or run:", ""]
        lines += [f"- {k} {n}: {why}" for k, n, why in fails]
    lines += ["", "Fidelity: cosine over the det probability maps / rec outputs, per-position argmax agreement "
              "for rec `[N, T, C]`; ✗ = outside trtopt's default tolerance (cosine >= 0.99, agreement >= 99 %).",
              "Targets: default INT8 and INT8+FP16 det >= 99 % of FP32's boxes; default INT8 rec >= 90 % "
              "of lines as FP32; FP16 >= 99 % boxes and strings.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ppocr")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--opset13", action="store_true", help="upgrade the FP32 models to opset 13 first")
    ap.add_argument("--det-calib", type=int, default=8, help="rendered calibration pages (det)")
    ap.add_argument("--rec-calib", type=int, default=32, help="rendered calibration lines (rec)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads for evaluation (0 = default)")
    ap.add_argument("--work", type=Path, default=None, help="keep the variants here (default: a temp folder)")
    args = ap.parse_args()
    if (why := P.available()) is not None:
        sys.exit(f"ppocr_int8: {why}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from trtopt.benchmark.report import jsonable
    from trtopt.fileio import atomic_write_json, atomic_write_text

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        data = P.build_dataset(args.det_calib, args.rec_calib)
        paths = P.model_paths()
        fp32 = {k: prepare(paths[k], work / f"{k}.onnx", args.opset13) for k in ("det", "rec")}
        chars = P.characters(paths["rec"])
        ref = P.reference(data, fp32["det"], fp32["rec"], chars, args.threads)
        res: dict[str, Any] = {
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
            "argv": "".join(f" {a}" for a in sys.argv[1:]), "opset13": args.opset13, "methods": methods,
            "data": {"det_images": list(data.det_images), "rendered_lines": len(data.rec_truth),
                     "det_calib": args.det_calib, "rec_calib": args.rec_calib},
            "fp32": P.fp32_summary(data, ref)}
        for kind in ("det", "rec"):
            np.savez(work / f"{kind}_calib.npz", **(data.det_calib if kind == "det" else data.rec_calib))
            kw = work / kind
            kw.mkdir(exist_ok=True)
            variants = {"fp32": {"status": "ok", "path": fp32[kind]}}
            variants.update(build_variants(fp32[kind], work / f"{kind}_calib.npz", kw, methods))
            fn = (lambda p: P.evaluate_det(data, ref, p, args.threads)) if kind == "det" else \
                (lambda p: P.evaluate_rec(data, ref, p, chars, args.threads))
            _evaluate(kind, fn, variants)
            res[kind] = {"variants": variants}
            print(f"{kind}: " + ", ".join(f"{n}={v.get('box_recall', v.get('lines_exact_vs_fp32', v['status']))}"
                                          for n, v in variants.items()), flush=True)
        res["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out / "results.json", jsonable(res))
    atomic_write_text(args.out / "results.md", render(res))
    print(render(res))


if __name__ == "__main__":
    main()
