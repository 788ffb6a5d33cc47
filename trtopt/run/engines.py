"""The recipe report's engine column: build each variant graph with TensorRT and say what it compiled to.

The recipe pipeline prepares the variant ONNX graphs (FP32, FP16, Q/DQ INT8, INT8+FP16, 2:4 ...;
:meth:`trtopt.pipeline.Pipeline.prepare`); this module builds each one into an engine (TensorRT for
RTX needs no GPU) and returns one row per graph: parse and build seconds, engine size, INT8 layers
compiled / quantized, FP16 compute layers. It is what ``bench/trt_rtx_build.py`` records and what
the CI tests assert on; :func:`engine_summary` turns a row into the report's
:class:`~trtopt.benchmark.report.EngineCell`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trtopt.backends.tensorrt import BuildConfig, build_engine
from trtopt.backends.tensorrt.profiles import profiles_from_specs
from trtopt.benchmark.report import EngineCell
from trtopt.errors import TrtoptError
from trtopt.log import get_logger
from trtopt.optional import install_hint, is_installed
from trtopt.recipe import VARIANTS

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
        int8_mac_share: Share (0-1) of the compute nodes' MACs at the opt shapes compiled INT8.
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
    int8_mac_share: float | None = None

    def row(self) -> dict[str, Any]:
        """JSON row (the manifest is left out)."""
        return {"recipe": self.recipe, "variant": self.variant, "status": self.status, "reason": self.reason,
                "onnx": self.onnx, "parse_s": self.parse_s, "build_s": self.build_s, "engine_mb": self.engine_mb,
                "int8_compiled": self.int8, "quantized": self.quantized, "compute_precisions": self.compute,
                "fallbacks": list(self.fallbacks), "int8_mac_share": self.int8_mac_share}


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
                        fallbacks=fallbacks, int8_mac_share=c.get("int8_mac_share"))


def engine_summary(recipe: str, variant: str, onnx_path: str | os.PathLike[str],
                   engine_dir: str | os.PathLike[str], **options: Any) -> EngineCell:
    """Build ``variant`` ahead of time for RTX GPUs and summarise it for the report's engine column.

    ``options`` are further :class:`~trtopt.backends.tensorrt.config.BuildConfig` fields (e.g. ``shapes``,
    the optimization profile of a model with dynamic axes besides the batch).

    Returns:
        ``EngineCell(text="0.9 MB · 5/5 INT8 (98% of MACs)", status="ok", details={"engine": ..., ...})``
        (compute layers compiled INT8 / quantized, and the share of the MACs at the opt shapes they
        carry; FP16 or FP32 graphs: ``"0.5 MB · 5/5 FP16"``), status ``not installed`` with the
        install command as text without TensorRT for RTX, or status ``failed`` with the reason. Never
        raises for a build failure: the benchmark stands.
    """
    if not is_installed("tensorrt_rtx"):
        return EngineCell(text=install_hint("tensorrt-rtx"), status="not installed")
    b = build_variant(recipe, variant, onnx_path, engine_dir, **options)
    if b.status != "ok":
        return EngineCell(text=f"build failed: {b.reason}"[:200], status="failed", reason=b.reason)
    n = sum((b.compute or {}).values())
    if b.quantized:
        what = f"{b.int8}/{b.quantized} INT8"
        if b.int8_mac_share is not None:
            what += f" ({100 * b.int8_mac_share:.0f}% of MACs)"
    else:
        top = max((b.compute or {"?": 0}).items(), key=lambda kv: kv[1])[0]
        what = f"{(b.compute or {}).get(top, 0)}/{n} {top}"
    return EngineCell(text=f"{b.engine_mb:.1f} MB · {what}", status="ok", details={
        "engine": b.engine, "engine_mb": b.engine_mb, "int8": b.int8, "quantized": b.quantized,
        "compute_precisions": b.compute, "fallbacks": list(b.fallbacks), "build_s": b.build_s,
        "int8_mac_share": b.int8_mac_share})


def engine_column(recipe: str, variant: str, onnx_path: str | os.PathLike[str], engine_dir: str | os.PathLike[str],
                  specs: Sequence[Any] | None = None) -> EngineCell:
    """The engine column of a recipe run on ONNX Runtime: :func:`engine_summary` with the workload's profile.

    Args:
        recipe: Recipe name.
        variant: Variant name.
        onnx_path: The variant's ONNX graph.
        engine_dir: Engine store.
        specs: The workload's :class:`~trtopt.inputs.InputSpec` declarations (a user's model): the
            optimization profile (min/opt/max of every dynamic axis) comes from them.
    """
    shapes = profiles_from_specs(specs) if specs else ()
    return engine_summary(recipe, variant, onnx_path, engine_dir, **({"shapes": shapes} if shapes else {}))


def runner_options(backend: str, variant: str, specs: Sequence[Any] | None,
                   engine_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments of :func:`trtopt.backends.open_runner` for a recipe variant's ONNX graph on ``backend``.

    TensorRT backends get a :class:`~trtopt.backends.tensorrt.config.BuildConfig` naming what the graph
    holds (it already carries the precision: Q/DQ, FP16 casts; TensorRT 10 and 11 build it strongly
    typed), the profile of a user's model from ``specs``, and the engine store; other backends none.
    """
    if backend not in ("tensorrt", "tensorrt-rtx"):
        return {}
    v = VARIANTS[variant]
    cfg = BuildConfig(precision="int8+fp16" if v.fp16_rest else v.precision, sparsity=v.sparse, backend=backend,
                      shapes=profiles_from_specs(specs) if specs else ())
    return {"config": cfg, "engine_dir": engine_dir}
