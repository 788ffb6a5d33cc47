"""Cost of the fidelity guard: ``trtopt quantize`` (guarded, the default) against ``--no-fidelity-guard``.

On PP-OCRv4 rec and det (Paddle2ONNX exports shipped in ``rapidocr-onnxruntime``, data from
``bench/ppocr_common.py``) and the digits CNN (trained here on scikit-learn's digits), each model is
calibrated once with ``trtopt calibrate``; then the all-INT8 path and the default guarded path are
run with the CLI exactly as a user runs them, alternating (all-INT8 first on even rounds, guarded
first on odd ones), best of ``--reps``. Each row records the layers the guard kept in float and its
verdict, and the fidelity of both models against FP32 on the calibration data (cosine, per-position
/ top-1 agreement; trtopt's default tolerance).

Run:  python bench/guard_cost.py [--reps 2] [--models rec,det,digits]
Writes bench/results/guard_cost/results.json and results.md (with the machine).
"""

from __future__ import annotations

import argparse
import json
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
OUT = ROOT / "bench" / "results" / "guard_cost"


def cli(*args: str) -> tuple[float, str]:
    """Run the trtopt CLI; (seconds, stderr). Exits on failure with its last line."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "trtopt.cli.main", *args], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        sys.exit(f"guard_cost: trtopt {args[0]} failed: {lines[-1] if lines else p.returncode}")
    return secs, p.stderr


def kept_by_guard(path: Path) -> list[str]:
    """Layers the saved model's Q/DQ summary says the fidelity guard kept in float (a file on disk)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    raw = next((p.value for p in m.metadata_props if p.key == "trtopt.int8.summary"), "{}")
    return [n for n, why in json.loads(raw).get("kept_float", {}).items() if why.startswith("fidelity guard")]


def outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = next(iter(feeds.values()))
    outs = [sess.run(None, {name: x[i:i + 8]}) for i in range(0, x.shape[0], 8)]
    return [np.concatenate([o[j] for o in outs]).astype(np.float32) for j in range(len(outs[0]))]


def judged(ref: list[np.ndarray], path: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fidelity of ``path`` against FP32 on ``feeds`` (first output) and the default tolerance's verdict."""
    from trtopt.judge.generic import DEFAULT_TOLERANCE, fidelity

    fid = fidelity(ref[0], outputs(path, feeds)[0])
    keep = ("cosine", "top1_agreement", "min_channel_cosine")
    return {**{k: fid.get(k) for k in keep}, "violations": DEFAULT_TOLERANCE.violations(fid)}


def digits(work: Path) -> tuple[Path, dict[str, np.ndarray]]:
    import torch

    from trtopt.export import ExportConfig, export_onnx
    from trtopt.models.digits import load_digits_split, train_digits_cnn

    split = load_digits_split(seed=0)
    torch.manual_seed(0)
    model = train_digits_cnn(split, seed=0)
    path = work / "digits.onnx"
    export_onnx(model, torch.from_numpy(split.x_test[:1]), path, ExportConfig())
    return path, {"input": split.x_calib.astype(np.float32)}


def measure(name: str, model: Path, feeds: dict[str, np.ndarray], work: Path, reps: int) -> dict[str, Any]:
    calib = work / f"{name}_calib.npz"
    np.savez(calib, **feeds)
    cal_s, _ = cli("calibrate", str(model), "--data", str(calib), "--out", str(work / f"{name}-calib"))
    table = work / f"{name}-calib" / f"{model.stem}.calib.json"
    runs: dict[str, list[float]] = {"int8": [], "guarded": []}
    logs: dict[str, str] = {}
    dest = {k: work / f"{name}.{k}.onnx" for k in runs}
    for r in range(reps):
        for kind in (("int8", "guarded") if r % 2 == 0 else ("guarded", "int8")):
            extra = ["--no-fidelity-guard"] if kind == "int8" else []
            secs, logs[kind] = cli("quantize", str(model), "--calib", str(table), *extra, "--out", str(dest[kind]))
            runs[kind].append(round(secs, 2))
            print(f"{name}: {kind} {secs:.1f} s", flush=True)
    ref = outputs(model, feeds)
    kept = kept_by_guard(dest["guarded"])
    verdict = " ".join(ln for ln in logs["guarded"].splitlines() if ln.startswith("fidelity guard:"))
    best = {k: min(v) for k, v in runs.items()}
    return {"calibrate_s": round(cal_s, 2), "seconds": runs, "best_s": best,
            "ratio": round(best["guarded"] / best["int8"], 2), "kept_float": len(kept), "kept_nodes": kept,
            "guard": re.sub(r"\s+", " ", verdict)[:600], "samples": int(next(iter(feeds.values())).shape[0]),
            "fidelity_int8": judged(ref, dest["int8"], feeds), "fidelity_guarded": judged(ref, dest["guarded"], feeds)}


def render(res: dict[str, Any]) -> str:
    lines = ["# Cost of the fidelity guard (`trtopt quantize` vs `--no-fidelity-guard`)", "",
             f"{res['created']}, {res['machine']}, best of {res['reps']} (alternating); code {res['code']}", "",
             "| model | all-INT8 s | guarded s | ratio | kept in float | guarded cosine | guarded verdict |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        fg = r["fidelity_guarded"]
        lines.append(f"| {name} | {r['best_s']['int8']} | {r['best_s']['guarded']} | {r['ratio']}x | "
                     f"{r['kept_float']} | {fg['cosine']:.4f} | {'; '.join(fg['violations']) or 'within tolerance'} |")
    lines += ["", "Fidelity on the calibration data against FP32 (first output), trtopt's default tolerance.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--models", default="rec,det,digits")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--code", default="this tree", help="label of the code measured (recorded)")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if {"rec", "det"} & set(names) and (why := P.available()) is not None:
        sys.exit(f"guard_cost: {why}")
    res: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores "
                   f"(shared), {platform.system()} {platform.release()}, Python {platform.python_version()}",
        "reps": args.reps, "code": args.code, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = P.build_dataset(scan_lines=False) if {"rec", "det"} & set(names) else None
        paths = P.model_paths() if data is not None else {}
        for name in names:
            if name == "digits":
                model, feeds = digits(work)
            else:
                model, feeds = paths[name], (data.rec_calib if name == "rec" else data.det_calib)
            res["models"][name] = measure(name, Path(model), feeds, work, args.reps)
            save(args.out, res)  # after every model: a long run leaves what it measured
    print(render(res))


def save(out: Path, res: dict[str, Any]) -> None:
    from trtopt.fileio import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", res)
    atomic_write_text(out / "results.md", render(res))


if __name__ == "__main__":
    main()
