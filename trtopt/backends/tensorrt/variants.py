"""Build every variant graph of a recipe with TensorRT and say what each compiled to.

The recipe pipeline prepares the variant ONNX graphs (FP32, FP16, Q/DQ INT8, INT8+FP16, 2:4 ...); this
module builds each one into an engine (TensorRT for RTX needs no GPU) and returns one row per graph:
parse and build seconds, engine size, INT8 layers compiled / quantized, FP16 compute layers. It is what
``bench/trt_rtx_build.py`` records and what the CI tests assert on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.errors import TrtoptError
from trtopt.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class VariantBuild:
    """One variant graph built with TensorRT.

    Attributes:
        recipe: Recipe name.
        variant: Variant name (``int8-fp16``, ``sparse24-int8``, ...).
        status: ``ok`` or ``failed``.
        reason: One-line error when failed.
        onnx: The variant graph.
        engine: Engine file (None when failed).
        manifest: The engine manifest (None when failed).
        parse_s: ONNX parse seconds.
        build_s: Whole build seconds (parse included).
        engine_mb: Engine size in MB (10^6 bytes).
        quantized: Compute nodes with Q/DQ on both inputs in the ONNX graph.
        int8: Quantized nodes compiled with INT8 inputs.
        compute: Compute nodes (Conv/ConvTranspose/Gemm/MatMul) per compiled precision.
        fallbacks: ``node (op, module): precision`` of quantized nodes compiled in float.
    """

    recipe: str
    variant: str
    status: str
    reason: str = ""
    onnx: str = ""
    engine: str | None = None
    manifest: dict[str, Any] | None = None
    parse_s: float | None = None
    build_s: float | None = None
    engine_mb: float | None = None
    quantized: int = 0
    int8: int = 0
    compute: dict[str, int] | None = None
    fallbacks: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        """JSON row (the manifest is left out)."""
        return {"recipe": self.recipe, "variant": self.variant, "status": self.status, "reason": self.reason,
                "onnx": self.onnx, "parse_s": self.parse_s, "build_s": self.build_s, "engine_mb": self.engine_mb,
                "int8_compiled": self.int8, "quantized": self.quantized, "compute_precisions": self.compute,
                "fallbacks": list(self.fallbacks)}


def prepare_variant_graphs(recipe_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                           overrides: dict[str, dict[str, Any]] | None = None) -> tuple[Any, dict[str, Path],
                                                                                        dict[str, str]]:
    """Run the recipe's preparation stages (workload, prune, export, calibrate, quantize), no benchmark.

    Returns:
        ``(recipe, {variant: ONNX path}, {variant: failure reason})``.
    """
    from trtopt.models.load import load_workload
    from trtopt.pipeline import Pipeline
    from trtopt.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    pipe = Pipeline(recipe, out_dir)
    workload = load_workload(recipe.workload)
    artifacts = pipe._prepare(workload)  # the same graphs `trtopt run` benchmarks
    return recipe, artifacts, dict(pipe.failed)


def build_variant(recipe: str, variant: str, onnx_path: str | os.PathLike[str], engine_dir: str | os.PathLike[str],
                  backend: str = "tensorrt-rtx", **options: Any) -> VariantBuild:
    """Build one variant graph; a :class:`~trtopt.errors.TrtoptError` becomes a ``failed`` row.

    Args:
        recipe: Recipe name (for the row).
        variant: Variant name; its precision and sparsity choose the build precision and SPARSE_WEIGHTS.
        onnx_path: The variant's ONNX graph.
        engine_dir: Engine store.
        backend: ``tensorrt-rtx`` (default, no GPU needed) or ``tensorrt``.
        **options: Further :class:`~trtopt.backends.tensorrt.config.BuildConfig` fields.
    """
    from trtopt.backends.tensorrt import BuildConfig, build_engine
    from trtopt.recipe import VARIANTS

    v = VARIANTS[variant]
    sparse, precision, fp16_rest = v.sparse, v.precision, v.fp16_rest
    try:
        cfg = BuildConfig(backend=backend, precision="int8+fp16" if fp16_rest else precision, sparsity=sparse,
                          **options)
        t0 = time.perf_counter()
        res = build_engine(onnx_path, cfg, engine_dir=engine_dir, rebuild=True)
        wall = time.perf_counter() - t0
    except TrtoptError as exc:
        return VariantBuild(recipe, variant, "failed", reason=str(exc), onnx=str(onnx_path))
    m = res.data
    c = m.get("compiled") or {}
    fallbacks = tuple(f"{f['node']} ({f['op']}{', ' + f['module'] if f.get('module') else ''}): {f['compiled']}"
                      for f in c.get("fallbacks", []))
    log.debug("%s %s built in %.2f s", recipe, variant, wall)
    return VariantBuild(recipe, variant, "ok", onnx=str(onnx_path), engine=str(res.engine), manifest=m,
                        parse_s=m.get("parse_seconds"), build_s=m.get("build_seconds"),
                        engine_mb=round(m["engine"]["bytes"] / 1e6, 3), quantized=int(c.get("quantized", 0)),
                        int8=int(c.get("int8", 0)), compute=dict(c.get("compute_precisions") or {}),
                        fallbacks=fallbacks)


#: What the demo table says where TensorRT for RTX is not installed.


def engine_summary(recipe: str, variant: str, onnx_path: str | os.PathLike[str],
                   engine_dir: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """Build ``variant`` ahead of time for RTX GPUs and summarise it for the demo table's engine column.

    ``options`` are further :class:`~trtopt.backends.tensorrt.config.BuildConfig` fields (e.g. ``shapes``,
    the optimization profile of a model with dynamic axes besides the batch).

    Returns:
        ``{"text": "0.9 MB · 5/5 INT8", ...}`` (compute layers compiled INT8 / quantized; FP16 or FP32
        graphs: ``"0.5 MB · 5/5 FP16"``), ``{"text": <install command>}`` without TensorRT for RTX, or
        ``{"text": "build failed: ..."}``. Never raises for a build failure: the benchmark stands.
    """
    import importlib.util

    if importlib.util.find_spec("tensorrt_rtx") is None:
        from trtopt.optional import install_hint

        return {"text": install_hint("tensorrt-rtx"), "status": "not installed"}
    b = build_variant(recipe, variant, onnx_path, engine_dir, **options)
    if b.status != "ok":
        return {"text": f"build failed: {b.reason}"[:200], "status": "failed", "reason": b.reason}
    n = sum((b.compute or {}).values())
    if b.quantized:
        what = f"{b.int8}/{b.quantized} INT8"
    else:
        top = max((b.compute or {"?": 0}).items(), key=lambda kv: kv[1])[0]
        what = f"{(b.compute or {}).get(top, 0)}/{n} {top}"
    return {"text": f"{b.engine_mb:.1f} MB · {what}", "status": "ok", "engine": b.engine, "engine_mb": b.engine_mb,
            "int8": b.int8, "quantized": b.quantized, "compute_precisions": b.compute,
            "fallbacks": list(b.fallbacks), "build_s": b.build_s}
