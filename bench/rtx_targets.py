"""What compiles INT8 with TensorRT for RTX on each target GPU (Turing sm75 to Blackwell sm120).

Real trtopt INT8 graphs, made the way a user makes them: the digits demo (`trtopt demo`: INT8, 2:4 INT8,
and INT8+FP16 via `trtopt quantize --fp16-rest`) and the PP-OCRv4 detector and recognizer shipped in
rapidocr-onnxruntime (`trtopt calibrate` + `trtopt quantize`, fidelity guard on, and `--fp16-rest`).
Each graph is built ahead of time for one target at a time with `trtopt build --backend tensorrt-rtx
--compute-capability SM` (default precision: the graph's own types), each build in its own process
(after a failed build TensorRT-RTX 1.7 compiles the next build of the same process differently).
Per cell: builds?, quantized Conv/ConvTranspose and Gemm/MatMul compiled with INT8 inputs (read from
the `Layers:` block), and why not where not. For sm75 the graph is also built exactly as the file is
(`as is`, no trtopt target preparation), which is what a plain TensorRT-RTX build does.

    nice -n 10 python bench/rtx_targets.py [--targets SM75,SM80,SM86,SM89,SM120] [--work DIR]

Needs the tensorrt-rtx and ocr extras (without `ocr`, the PP-OCR rows are skipped with the reason).
Writes bench/results/rtx_targets/targets.json and targets.md. Preparing the graphs takes a few
minutes on 2 cores (`--work DIR` keeps them for a rerun); each build takes 0.2-20 s.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120")
CONV = ("Conv", "ConvTranspose")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _cli(*args: str, timeout: float = 1800) -> str:
    """Run the trtopt CLI; raise with its last output line when it fails."""
    p = subprocess.run([sys.executable, "-m", "trtopt", *args], capture_output=True, text=True, timeout=timeout,
                       env=ENV)
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        raise RuntimeError(f"trtopt {args[0]}: {lines[-1] if lines else p.returncode}")
    return p.stderr + p.stdout


def prepare(work: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """INT8 graphs to build: ``({name: {"path", "shapes"}}, {name: why it could not be made})``."""
    graphs: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    demo = work / "demo"
    if not (demo / "models" / "int8.onnx").is_file():
        _cli("demo", "--out", str(demo))
    for v in ("int8", "sparse24-int8"):
        graphs[f"digits {v}"] = {"path": demo / "models" / f"{v}.onnx", "shapes": []}
    mixed = work / "digits-int8-fp16.onnx"
    if not mixed.is_file():
        _cli("quantize", str(demo / "models" / "dense-fp32.onnx"), "--calib", str(demo / "calibration" /
             "dense.calib.json"), "--fp16-rest", "--out", str(mixed))
    graphs["digits int8+fp16"] = {"path": mixed, "shapes": []}
    import ppocr_common as P

    if (why := P.available()) is not None:
        skipped["PP-OCRv4 det/rec"] = why
        return graphs, skipped
    paths = P.model_paths()
    shapes = {"det": ["x:1x3x352x352"], "rec": ["x:1x3x48x320"]}
    todo = [k for k in ("det", "rec") if not (work / f"{k}.int8-fp16.onnx").is_file()]
    if todo:
        data = P.build_dataset(8, 32, eval_pages=0, eval_lines=0, scan_lines=False)
    for kind in ("det", "rec"):
        out_int8, out_mixed = work / f"{kind}.int8.onnx", work / f"{kind}.int8-fp16.onnx"
        if kind in todo:
            import numpy as np

            npz = work / f"{kind}_calib.npz"
            np.savez(npz, **(data.det_calib if kind == "det" else data.rec_calib))
            _cli("calibrate", str(paths[kind]), "--data", str(npz), "--out", str(work / f"{kind}-calib"))
            table = work / f"{kind}-calib" / f"{paths[kind].stem}.calib.json"
            _cli("quantize", str(paths[kind]), "--calib", str(table), "--out", str(out_int8))
            _cli("quantize", str(paths[kind]), "--calib", str(table), "--fp16-rest", "--out", str(out_mixed))
        graphs[f"PP-OCRv4 {kind} int8"] = {"path": out_int8, "shapes": shapes[kind]}
        graphs[f"PP-OCRv4 {kind} int8+fp16"] = {"path": out_mixed, "shapes": shapes[kind]}
    return graphs, skipped


def _counts(compiled: dict[str, Any]) -> dict[str, Any]:
    nodes = [n for n in compiled.get("nodes", []) if n["quantized"]]
    conv = [n for n in nodes if n["op"] in CONV]
    gemm = [n for n in nodes if n["op"] not in CONV]
    int8 = lambda ns: sum(1 for n in ns if n["compiled"] == "INT8")  # noqa: E731
    floats: dict[str, int] = {}
    for n in nodes:
        if n["compiled"] != "INT8":
            key = f"{n['op']} {n['compiled']}"
            floats[key] = floats.get(key, 0) + 1
    return {"quantized": len(nodes), "int8": int8(nodes), "conv": [int8(conv), len(conv)],
            "gemm": [int8(gemm), len(gemm)], "float": dict(sorted(floats.items()))}


def build_one(onnx_path: str, target: str, shapes: list[str], as_is: bool) -> dict[str, Any]:
    """One build (in this process): trtopt's build, or with ``as_is`` the file parsed unchanged."""
    from trtopt.backends.tensorrt import BuildConfig, build_engine
    from trtopt.backends.tensorrt.profiles import parse_shapes
    from trtopt.errors import TrtoptError

    cfg = BuildConfig(backend="tensorrt-rtx", compute_capabilities=(target,), shapes=parse_shapes(shapes))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if as_is:
                return _build_as_is(onnx_path, cfg)
            res = build_engine(onnx_path, cfg, engine_dir=tmp, rebuild=True)
        except TrtoptError as exc:
            return {"ok": False, "reason": str(exc)}
    m = res.data
    targets = m.get("targets") or {}
    return {"ok": True, "precision": m["build"]["options"]["precision"], "notes": targets.get("notes", []),
            "fp16_islands": len((targets.get("SM75") or {}).get("fp16_islands", [])),
            "build_s": m.get("build_seconds"), **_counts(m["compiled"])}


def _build_as_is(onnx_path: str, cfg: Any) -> dict[str, Any]:
    """Parse and build the file as it is (no target preparation), the way a plain TensorRT-RTX build does."""
    import onnx

    from trtopt.backends.tensorrt.features import tensorrt_features
    from trtopt.backends.tensorrt.flavour import import_tensorrt
    from trtopt.backends.tensorrt.graph import graph_info
    from trtopt.backends.tensorrt.layers import parse_layers_block, precision_report
    from trtopt.backends.tensorrt.network import serialize_network
    from trtopt.backends.tensorrt.plan import plan_build
    from trtopt.backends.tensorrt.profiles import resolve_profiles

    trt = import_tensorrt("tensorrt-rtx")
    data = Path(onnx_path).read_bytes()
    info = graph_info(data)
    feats = tensorrt_features(trt)
    plan = plan_build(cfg, feats, info)
    _, _, extra = serialize_network(trt, data, Path(onnx_path), cfg, plan, resolve_profiles(info, cfg), feats)
    report = precision_report(onnx.load_from_string(data), parse_layers_block(extra["layers"]))
    return {"ok": True, **_counts(report.to_dict())}


def _run_isolated(onnx_path: Path, target: str, shapes: list[str], as_is: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", str(onnx_path), target, json.dumps(shapes), "1" if as_is else "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=ENV)
    last = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not last:
        return {"ok": False, "reason": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return json.loads(last[-1])


def cell(r: dict[str, Any]) -> str:
    """Table cell: ``✓ 47/49 (2 ConvTranspose FP32)`` (INT8 / quantized, the rest) or ``✗ <reason>``."""
    if not r["ok"]:
        m = re.search(r"operation '([^']+)' for Turing \(SM75\): (FP32 GEMM is not supported)", r["reason"])
        return f"✗ {m.group(2)} (`{m.group(1)}`)" if m else f"✗ {r['reason'][:150]}"
    rest = ", ".join(f"{v} {k}" for k, v in r["float"].items())
    return f"✓ {r['int8']}/{r['quantized']}" + (f" ({rest})" if rest else "")


def markdown(doc: dict[str, Any]) -> str:
    """The table of ``doc`` (rows: graphs; columns: targets, plus sm75 as-is)."""
    cols = [*(["SM75 as is"] if "SM75" in doc["targets"] else []), *doc["targets"]]
    lines = [f"# TensorRT for RTX {doc['tensorrt_rtx']}: what compiles INT8 on each target", "",
             f"{doc['when']} · {doc['machine']} · command: `{doc['command']}`", "",
             "One engine per target (`trtopt build MODEL --backend tensorrt-rtx --compute-capability SM`, default "
             "precision = the graph's own types). ✓ a/b = the build succeeds and a of the b quantized "
             "Conv/ConvTranspose/Gemm/MatMul compile with INT8 inputs (from the `Layers:` block); in brackets what "
             "the others compiled to. ✗ = the build fails. `sm75 as is` = the same file built unchanged, without "
             "trtopt's sm75 preparation (FP16 islands around FP32 Gemm/MatMul).", "",
             "| graph | " + " | ".join(c.lower() for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in doc["rows"].items():
        lines.append(f"| {name} | " + " | ".join(cell(row[c]) for c in cols) + " |")
    for name, why in doc.get("skipped", {}).items():
        lines.append(f"| {name} | skipped: {why} |" + " |" * (len(cols) - 1))
    lines += ["", "Why not INT8:", "",
              "- Conv on sm75: TensorRT-RTX has no INT8 convolution for Turing (a Q/DQ conv compiles as a float conv "
              "over dequantized weights: FP16 in an FP16-typed graph, FP32 otherwise).",
              "- ConvTranspose on every target: TensorRT-RTX has no INT8 deconvolution.",
              "- ✗ on sm75 as is: an FP32-typed Gemm/MatMul (quantized or kept in float by the fidelity guard) fails "
              "Turing's check before Q/DQ fusion; typed FP16 it compiles, quantized ones in INT8.", "",
              "What `trtopt build` said up front for sm75:", ""]
    for name, row in doc["rows"].items():
        r = row.get("SM75", {})
        lines.append(f"- {name}: {r.get('fp16_islands', 0)} FP32 Gemm/MatMul built as FP16 islands; "
                     + " / ".join(n.split(" (")[0] for n in r.get("notes", [])))
    return "\n".join(lines) + "\n"


def _shown_args(argv: list[str]) -> list[str]:
    """The command-line arguments to record: ``--work DIR`` only caches inputs, so it is left out."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--work":
            skip = True
        elif not a.startswith("--work="):
            out.append(a)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--work", type=Path, default=None, help="keep the prepared graphs here (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/rtx_targets")
    ap.add_argument("--one", nargs=4, metavar=("ONNX", "TARGET", "SHAPES", "AS_IS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        onnx_path, target, shapes, as_is = args.one
        print(json.dumps(build_one(onnx_path, target, json.loads(shapes), as_is == "1")))
        return 0
    import tensorrt_rtx

    from trtopt.fileio import atomic_write_json, atomic_write_text

    targets = [t.strip().upper() for t in args.targets.split(",") if t.strip()]
    with tempfile.TemporaryDirectory(prefix="rtx-targets-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        graphs, skipped = prepare(work)
        print(f"{len(graphs)} graphs prepared in {time.perf_counter() - t0:.0f} s", flush=True)
        rows: dict[str, dict[str, Any]] = {}
        for name, g in graphs.items():
            row = rows.setdefault(name, {})
            for target in targets:
                row[target] = _run_isolated(g["path"], target, g["shapes"])
                print(f"{name} {target}: {cell(row[target])}", flush=True)
            if "SM75" in targets:
                row["SM75 as is"] = _run_isolated(g["path"], "SM75", g["shapes"], as_is=True)
                print(f"{name} SM75 as is: {cell(row['SM75 as is'])}", flush=True)
    doc = {"tensorrt_rtx": tensorrt_rtx.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, no GPU", "targets": targets,
           "command": "nice -n 10 python bench/rtx_targets.py " + " ".join(_shown_args(sys.argv[1:])), "rows": rows,
           "skipped": skipped}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "targets.json", doc)
    atomic_write_text(args.out / "targets.md", markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
