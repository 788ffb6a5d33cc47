"""What a finished build is: engine I/O and layers, the compiled-precision report, the manifest.

:func:`describe_engine` deserializes an engine (needs a GPU) and reads its inspector;
:func:`describe_build` turns one build's facts into the manifest written beside the engine (for an
RTX engine, which cannot be deserialized without a GPU, the build log stands in for the inspector).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.backends.tensorrt.config import BuildConfig, graph_precision
from trtopt.backends.tensorrt.flavour import make_logger
from trtopt.backends.tensorrt.graph import ParserInput
from trtopt.backends.tensorrt.layers import PrecisionReport, inspector_layers, parse_layers_block, precision_report
from trtopt.backends.tensorrt.logparse import (
    deserialize_failure,
    merge_inspector_sparsity,
    parse_inspector,
    parse_sparsity_log,
    precision_counts,
)
from trtopt.backends.tensorrt.manifest import make_manifest
from trtopt.backends.tensorrt.plan import BuildPlan
from trtopt.backends.tensorrt.profiles import Ranges
from trtopt.errors import InputError
from trtopt.fileio import sha256_bytes
from trtopt.log import get_logger

log = get_logger(__name__)

#: Why a TensorRT-RTX build cannot count sparse layers (shown instead of "0 layers eligible, 0 picked").
RTX_SPARSITY_UNKNOWN = "TensorRT-RTX does not report sparse tactic choices in an ahead-of-time build"


@dataclass(frozen=True)
class BuiltEngine:
    """One serialized engine and what its build said.

    Attributes:
        data: The serialized engine.
        lines: Captured INFO+ log lines of the build.
        extra: ``layers`` (VERBOSE ``Layers:`` block), ``io``, ``parse_seconds`` (see
            :func:`~trtopt.backends.tensorrt.network.serialize_network`).
        seconds: Wall time of parse + build.
    """

    data: bytes
    lines: list[str]
    extra: dict[str, Any]
    seconds: float


def describe_engine(trt: Any, data: bytes, what: str, host_code: bool = False
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Deserialize ``data`` (needs a GPU) and return ``(io tensors, inspector layers, detailed layers)``.

    Detailed layers (:func:`~trtopt.backends.tensorrt.layers.inspector_layers`) feed the precision report.

    ``host_code`` must be True for version-compatible engines (they embed the lean runtime).

    Raises:
        IncompatibleArtifactError | InputError: TensorRT cannot load the engine.
    """
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    if host_code:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise deserialize_failure(what, logger.lines)
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        io.append({"name": name, "mode": mode, "dtype": engine.get_tensor_dtype(name).name,
                   "shape": list(engine.get_tensor_shape(name))})
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        layers = parse_inspector(info)
    except InputError:
        layers = []
    return io, layers, inspector_layers(info)


def compiled_report(onnx_bytes: bytes, layers: list[dict[str, Any]], config: BuildConfig, what: str,
                    shapes: Mapping[str, Any] | None = None) -> PrecisionReport:
    """Precision report of a build; raises under ``config.strict`` and warns otherwise when INT8 fell back.

    ``shapes`` (the first optimization profile's opt shapes) weigh each compute node by its MACs.

    Raises:
        BuildError: ``config.strict`` and a quantized layer compiled in float.
    """
    import onnx

    report = precision_report(onnx.load_from_string(onnx_bytes), layers, shapes)
    if config.strict:
        report.raise_if_fallbacks(f"{what}")
    elif report.fallbacks:
        log.warning("%s: %s (%s)", what, report.summary(), "; ".join(report.fallback_lines()))
    return report


def input_sections(data: bytes, engine_name: str, model: ParserInput, onnx_sha: str,
                   profiles: Ranges, calib: Mapping[str, Any], config: BuildConfig,
                   sources: Mapping[str, str]) -> dict[str, Any]:
    """Manifest sections describing the inputs of a build; profiles say where they came from."""
    info = model.info
    return {"engine": {"file": engine_name, "sha256": sha256_bytes(data), "bytes": len(data)},
            "onnx": {"path": str(model.path), "sha256": onnx_sha, "has_qdq": info.has_qdq,
                     "has_fp16": info.has_fp16},
            "profiles": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2]),
                             "source": sources.get(k, f"default batch {list(config.default_batch)}")}
                         for k, v in profiles.items()},
            "calibration": {k: v for k, v in calib.items() if k in ("path", "sha256", "header", "cache_out",
                                                                     "calibrator", "batches")} or None,
            "timing_cache": timing_cache_info(config.timing_cache),
            "memory_pools": {"WORKSPACE": config.workspace_mib << 20 if config.workspace_mib else None}}


def timing_cache_info(path: str) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of a timing cache file, or None when there is none."""
    if not path or not Path(path).is_file():
        return None
    return {"path": path, "sha256": sha256_bytes(Path(path).read_bytes())}


def describe_build(trt: Any, built: BuiltEngine, engine_path: Path, key: str, env: dict[str, Any],
                   model: ParserInput, config: BuildConfig, requested: str, plan: BuildPlan,
                   resolved: tuple[Ranges, Mapping[str, str]], calib: Mapping[str, Any],
                   targets: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest of one build (engine, inputs, plan, layers, sparsity, compiled precision).

    Args:
        trt: The imported TensorRT module (deserializes the engine; not for RTX builds).
        built: The serialized engine and its build log.
        engine_path: Where the store puts the engine (named in messages and the manifest).
        key: The engine's cache key.
        env: :func:`~trtopt.backends.tensorrt.manifest.runtime_environment` (or the RTX one).
        model: The ONNX model as read for the build; the compiled report is matched against the
            graph as the user wrote it (before any per-target rewrite).
        config: Build options, ``precision`` already resolved from ``auto``.
        requested: The precision asked for (``auto`` or an explicit one).
        plan: The flag plan.
        resolved: ``(profiles, sources)`` from :func:`~trtopt.backends.tensorrt.profiles.resolve_profiles_with_sources`.
        calib: Calibration facts (path, sha256, header, cache_out, calibrator, batches).
        targets: The per-target section of a TensorRT-RTX build, or None.

    Raises:
        BuildError: ``config.strict`` and a quantized layer compiled in float.
    """
    profiles, sources = resolved
    if plan.rtx:  # an RTX engine cannot be deserialized without a GPU: read the build log instead
        io, layers, detailed = built.extra["io"], [], parse_layers_block(built.extra["layers"])
    else:
        io, layers, detailed = describe_engine(trt, built.data, str(engine_path), host_code=config.version_compatible)
    compiled = compiled_report(model.parser_bytes, detailed, config, model.path.name,
                               {k: v[1] for k, v in profiles.items()})
    sections = input_sections(built.data, engine_path.name, model, sha256_bytes(model.file_bytes), profiles, calib,
                              config, sources)
    sparsity = merge_inspector_sparsity(parse_sparsity_log(built.lines), layers)
    if plan.rtx:  # its AOT build prints no (Sparsity) lines: "0 eligible" would read as "nothing to gain"
        sparsity.unknown_reason = RTX_SPARSITY_UNKNOWN
    info = model.info
    precision = {"requested": requested, "built": config.precision,
                 "graph": graph_precision(info.has_qdq, info.has_fp16)[1]}
    build = {"options": config.to_dict(), "plan": plan.to_dict(), "precision": precision}
    return make_manifest(key, env, build, **sections, io=io, targets=targets, sparsity=sparsity.to_dict(),
                         build_seconds=round(built.seconds, 3), parse_seconds=round(built.extra["parse_seconds"], 3),
                         layers={"precisions": precision_counts(layers), "detail": layers or detailed},
                         compiled=compiled.to_dict(),
                         log_warnings=[ln for ln in built.lines if ln.startswith("WARNING")][:50])
