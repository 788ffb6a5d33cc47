"""Build every recipe's variant graphs with TensorRT for RTX (no GPU) and record what each compiled to.

For each recipe under bench/recipes/: run its preparation stages (workload, 2:4 prune, export, entropy
calibration, Q/DQ / FP16), then build every variant graph (all of trtopt's variants, not only the ones the
recipe benchmarks) ahead of time for TensorRT-RTX's default targets. Per graph: parse s, build s (parse
included), engine MB, INT8 layers compiled / quantized, compute layers per compiled precision.

    nice -n 10 python bench/trt_rtx_build.py                      # every recipe
    nice -n 10 python bench/trt_rtx_build.py --recipes digits_demo resnet18

Writes bench/results/trt-rtx/builds.json and builds.md. Build times are single runs on a shared 2-core
machine: an order of magnitude, not a benchmark. Engines are not timed (that needs an RTX GPU).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trtopt.errors import TrtoptError  # noqa: E402
from trtopt.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from trtopt.models.load import load_workload  # noqa: E402
from trtopt.pipeline import Pipeline  # noqa: E402
from trtopt.recipe import VARIANTS, load_recipe  # noqa: E402
from trtopt.run.engines import build_variant  # noqa: E402

RECIPES = ("digits_demo", "resnet18", "mobilenet_v2", "resnet50", "minilm")


def _markdown(doc: dict) -> str:
    lines = [f"# TensorRT for RTX {doc['tensorrt_rtx']}: every variant graph built on a CPU-only machine", "",
             f"{doc['when']} · {doc['machine']} · targets: TensorRT-RTX defaults ({', '.join(doc['targets'])}) · "
             f"command: `{doc['command']}`", "",
             "Build s includes parse s; single runs on a shared 2-core machine (order of magnitude). "
             "INT8 = quantized Conv/Gemm/MatMul compiled with INT8 inputs / quantized in the ONNX graph. "
             "Compute = Conv/ConvTranspose/Gemm/MatMul per compiled input precision (from the Layers block).", "",
             "| recipe | variant | status | parse s | build s | engine MB | INT8 compiled / quantized | compute |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['recipe']} | {r['variant']} | {r['status']}: {r['reason'][:160]} | | | | | |")
            continue
        comp = ", ".join(f"{k} {v}" for k, v in (r["compute_precisions"] or {}).items())
        lines.append(f"| {r['recipe']} | {r['variant']} | ok | {r['parse_s']:.3f} | {r['build_s']:.2f} | "
                     f"{r['engine_mb']:.2f} | {r['int8_compiled']}/{r['quantized']} | {comp} |")
    fb = [f"- {r['recipe']} {r['variant']}: {f}" for r in doc["rows"] for f in r.get("fallbacks", [])]
    lines += ["", "Quantized layers that fell back to float: " + ("none" if not fb else ""), *fb, ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/trt-rtx")
    args = ap.parse_args()
    import tensorrt_rtx

    from trtopt.backends.tensorrt.config import RTX_DEFAULT_TARGETS

    rows = []
    with tempfile.TemporaryDirectory(prefix="trt-rtx-bench-") as tmp:
        for name in args.recipes:
            t0 = time.perf_counter()
            try:
                recipe = load_recipe(ROOT / "bench/recipes" / f"{name}.toml", {"recipe": {"variants": list(VARIANTS)}})
                pipe = Pipeline(recipe, Path(tmp) / name)
                graphs, failed = pipe.prepare(load_workload(recipe.workload)), pipe.failed
            except TrtoptError as exc:
                rows.append({"recipe": name, "variant": "*", "status": "skipped", "reason": str(exc)})
                print(f"{name}: skipped ({exc})", flush=True)
                continue
            print(f"{name}: {len(graphs)} graphs prepared in {time.perf_counter() - t0:.0f} s", flush=True)
            for v, reason in failed.items():
                rows.append({"recipe": recipe.run.name, "variant": v, "status": "not prepared", "reason": reason})
            for v, path in graphs.items():
                row = build_variant(recipe.run.name, v, path, Path(tmp) / name / "engines").row()
                row["onnx"] = Path(row["onnx"]).name
                rows.append(row)
                print(f"  {v}: {row['status']} {row.get('build_s')} s {row.get('int8_compiled')}/"
                      f"{row.get('quantized')} {row.get('compute_precisions')} {row['reason'][:200]}", flush=True)
    doc = {"tensorrt_rtx": tensorrt_rtx.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()}, no GPU", "targets": list(RTX_DEFAULT_TARGETS),
           "command": "nice -n 10 python bench/trt_rtx_build.py " + " ".join(sys.argv[1:]), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "builds.json", doc)
    atomic_write_text(args.out / "builds.md", _markdown(doc))
    print(f"wrote {args.out / 'builds.json'} and builds.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
