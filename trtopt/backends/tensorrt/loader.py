"""TensorRT API calls for building an engine: logger, parser, builder config, timing cache, build.

Decisions come from :mod:`trtopt.backends.tensorrt.plan`; this module only applies them. Variable
names for TensorRT objects follow :data:`~trtopt.backends.tensorrt.plan.INSTANCE_VARS` (``builder``,
``network``, ``parser``, ``trt_config``, ...) so the API-check test can find every attribute used.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.backends.tensorrt.config import RTX_DEFAULT_TARGETS, BuildConfig, graph_precision
from trtopt.backends.tensorrt.flavour import flavour_of, import_tensorrt, label, make_logger, rtx_environment
from trtopt.backends.tensorrt.layers import PrecisionReport, inspector_layers, parse_layers_block, precision_report
from trtopt.backends.tensorrt.logparse import (
    build_failure,
    deserialize_failure,
    format_parser_errors,
    merge_inspector_sparsity,
    parse_inspector,
    parse_sparsity_log,
    precision_counts,
)
from trtopt.backends.tensorrt.plan import (
    BuildPlan,
    Features,
    Shape,
    cache_key,
    detect_features,
    graph_info,
    has_attr_chain,
    nv_tensorrt_version,
    plan_build,
    resolve_profiles_with_sources,
)
from trtopt.backends.tensorrt.targets import prepare_for_targets
from trtopt.errors import BuildError, ConfigError, InputError
from trtopt.fileio import atomic_write_bytes, sha256_bytes
from trtopt.log import get_logger

log = get_logger(__name__)


#: Why a TensorRT-RTX build cannot count sparse layers (shown instead of "0 layers eligible, 0 picked").
RTX_SPARSITY_UNKNOWN = "TensorRT-RTX does not report sparse tactic choices in an ahead-of-time build"


@dataclass
class BuildResult:
    """Outcome of :func:`build_engine`.

    Attributes:
        engine: Engine file.
        manifest: Manifest file beside it.
        data: The manifest contents.
        reused: The store already held a matching engine.
    """

    engine: Path
    manifest: Path
    data: dict[str, Any]
    reused: bool


def _parse(trt: Any, logger: Any, network: Any, onnx_bytes: bytes, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse(onnx_bytes, str(onnx_path)):
        return
    errors = []
    for i in range(parser.num_errors):
        perr = parser.get_error(i)
        errors.append({"code": str(perr.code()), "desc": perr.desc(), "node": perr.node(),
                       "node_name": perr.node_name(), "node_operator": perr.node_operator()})
    bad = [ln for ln in logger.lines if ln.startswith(("ERROR", "INTERNAL_ERROR"))]
    who = label(flavour_of(trt), trt.__version__)
    raise BuildError(f"{who} cannot parse {onnx_path.name}: {format_parser_errors(errors, bad)}")


def _configure(trt: Any, builder: Any, trt_config: Any, config: BuildConfig, plan: BuildPlan,
               profiles: Mapping[str, tuple[Shape, Shape, Shape]]) -> Any:
    """Apply the plan to the builder config; returns the optimization profile (or None)."""
    for name in plan.builder_flags:
        trt_config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        trt_config.clear_flag(getattr(trt.BuilderFlag, name))
    if config.workspace_mib:
        trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    trt_config.builder_optimization_level = config.optimization_level
    trt_config.profiling_verbosity = getattr(trt.ProfilingVerbosity, plan.profiling_verbosity)
    if plan.rtx:  # RTX: no hardware compatibility level ("unsupported" warning); targets instead of a local GPU
        if plan.targets:
            trt_config.num_compute_capabilities = len(plan.targets)
            for i, name in enumerate(plan.targets):
                trt_config.set_compute_capability(getattr(trt.ComputeCapability, name), i)
    else:
        trt_config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_compat)
    if config.dla_core >= 0:
        if config.dla_core >= builder.num_DLA_cores:
            raise ConfigError(f"DLA core {config.dla_core} requested, this device has {builder.num_DLA_cores}")
        trt_config.default_device_type = trt.DeviceType.DLA
        trt_config.DLA_core = config.dla_core
    profile = None
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profiles.items():
            profile.set_shape(name, mn, opt, mx)
        trt_config.add_optimization_profile(profile)
    return profile


def _attach_calibrator(trt: Any, trt_config: Any, profile: Any, calibration: Mapping[str, Any]) -> Any:
    """Implicit INT8 (TensorRT 10.x only): attach Polygraphy's calibrator and the calibration profile."""
    from trtopt.backends.tensorrt.calibrator import CalibrationFeed, make_calibrator

    feed = CalibrationFeed(calibration.get("source"), calibration.get("input_shapes", {}))
    calib = make_calibrator(trt, feed, calibration.get("cache_text"))
    trt_config.int8_calibrator = calib
    if profile is not None:  # mandatory for dynamic shapes; TensorRT calibrates at its OPT shape
        trt_config.set_calibration_profile(profile)
    return calib


def _timing_cache(trt_config: Any, path: str) -> None:
    prev = Path(path).read_bytes() if path and Path(path).is_file() else b""
    timing_cache = trt_config.create_timing_cache(prev)
    if not trt_config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("timing cache %s was made on another device or TensorRT version; starting a fresh one", path)
        timing_cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(timing_cache, ignore_mismatch=False)


def serialize_network(trt: Any, onnx_bytes: bytes, onnx_path: Path, config: BuildConfig, plan: BuildPlan,
                      profiles: Mapping[str, tuple[Shape, Shape, Shape]], features: Features,
                      calibration: Mapping[str, Any] | None = None) -> tuple[bytes, list[str], dict[str, Any]]:
    """Parse ``onnx_bytes`` and build a serialized engine following ``plan``.

    Returns:
        ``(plan bytes, captured INFO+ log lines, extra)``; ``extra`` holds ``layers`` (the VERBOSE
        ``Layers:`` block or ""), ``io`` (network I/O) and ``parse_seconds``.

    Raises:
        BuildError: Parse or build failure, naming node, operator and message.
    """
    logger = make_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    t0 = time.perf_counter()
    _parse(trt, logger, network, onnx_bytes, onnx_path)
    parse_seconds = time.perf_counter() - t0
    trt_config = builder.create_builder_config()
    profile = _configure(trt, builder, trt_config, config, plan, profiles)
    if config.timing_cache and not plan.rtx:  # RTX: a no-op that warns on every call
        _timing_cache(trt_config, config.timing_cache)
    calib = None
    if plan.calibrator and features.weak_typing:
        calib = _attach_calibrator(trt, trt_config, profile, calibration or {})
    serialized = builder.build_serialized_network(network, trt_config)
    calibrated = None
    if calib is not None:
        from trtopt.backends.tensorrt.calibrator import finish_calibration

        # A failed build leaves no cache behind in the store (nothing half-made beside a missing engine).
        calibrated = finish_calibration(calib, (calibration or {}).get("cache_out") if serialized is not None else None)
    if serialized is None:
        raise build_failure(logger.lines)
    if config.timing_cache and not plan.rtx:
        timing_cache = trt_config.get_timing_cache()
        atomic_write_bytes(config.timing_cache, bytes(timing_cache.serialize()))
    return bytes(serialized), list(logger.lines), {"layers": logger.layers, "io": network_io(network),
                                                   "parse_seconds": parse_seconds, "calibrated": calibrated}


def network_io(network: Any) -> list[dict[str, Any]]:
    """Engine I/O read from the parsed network (used where the engine cannot be deserialized: no GPU)."""
    io = []
    for mode, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for i in range(count):
            tensor = get(i)
            io.append({"name": tensor.name, "mode": mode, "dtype": tensor.dtype.name, "shape": list(tensor.shape)})
    return io


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


def _calibration(calibration: str | os.PathLike[str] | None, source: Iterable[Any] | None, nv: int,
                 onnx_bytes: bytes, cache_out: str | None) -> dict[str, Any]:
    """Calibration inputs for the plan: cache text from a table/cache file, or a data source."""
    if calibration is None:
        return {"source": source, "cache_text": None, "cache_out": cache_out} if source is not None else {}
    import onnx

    from trtopt.backends.tensorrt.calibrator import cache_text_for

    g = onnx.load_from_string(onnx_bytes).graph
    names = {t for n in g.node for t in n.output} | {i.name for i in g.input}
    text = cache_text_for(calibration, nv, names)
    return {"source": source, "cache_text": text, "cache_out": cache_out, "path": str(calibration),
            "sha256": sha256_bytes(text.encode("ascii")), "header": text.splitlines()[0]}


def build_engine(onnx_path: str | os.PathLike[str], config: BuildConfig | None = None, *,
                 engine_dir: str | os.PathLike[str] = "engines", calibration: str | os.PathLike[str] | None = None,
                 calib_source: Iterable[Any] | None = None, rebuild: bool = False) -> BuildResult:
    """Build (or reuse) a TensorRT engine for an ONNX model in the engine store.

    Example::

        res = build_engine("model.onnx", BuildConfig(precision="fp16", sparsity=True))
        print(res.engine, res.data["sparsity"]["summary"])

    Args:
        onnx_path: ONNX model (Q/DQ or FP16-typed graphs are built strongly typed).
        config: Build options (default: the graph's own precision, TF32 off). ``precision="auto"``
            is recorded as the precision the graph holds (manifest ``build.precision``); TensorRT for
            RTX targets get :func:`~trtopt.backends.tensorrt.targets.prepare_for_targets` (warnings up
            front, FP16 islands for sm75, refusals; manifest ``targets``).
        engine_dir: Engine store folder.
        calibration: ``CalibrationTable`` JSON or TensorRT cache for implicit INT8 (10.x).
        calib_source: Calibration batches for implicit INT8 when no cache is given (10.x).
        rebuild: Build even when the store holds a matching engine.

    Returns:
        Engine and manifest paths and the manifest.

    Raises:
        MissingDependencyError: TensorRT is not installed.
        ConfigError | InputError | BuildError: Bad options, unreadable model, parse/build failure.
    """
    from trtopt.backends.tensorrt.manifest import make_manifest, runtime_environment
    from trtopt.backends.tensorrt.store import EngineStore

    config = config or BuildConfig()
    trt = import_tensorrt(config.backend)
    onnx_path = Path(onnx_path)
    from trtopt.onnx_graph import load_graph_only

    load_graph_only(onnx_path)  # missing, a folder, not ONNX, an empty graph: the message every command gives
    file_bytes = onnx_path.read_bytes()
    # what TensorRT parses (given the same path, so external data still loads)
    onnx_bytes, renamed = prepare_for_parser(file_bytes, onnx_path.name)
    info = _unnamed(graph_info(onnx_bytes), renamed)
    requested = config.precision
    if requested == "auto":  # the graph's own types decide (strongly typed), recorded as the precision built
        config = dataclasses.replace(config, precision=graph_precision(info.has_qdq, info.has_fp16)[0])
    features = detect_features(lambda dotted: has_attr_chain(trt, dotted))
    if features.rtx and (calibration is not None or calib_source is not None):
        raise ConfigError("TensorRT for RTX has no INT8 calibrators: build a Q/DQ model made by `trtopt quantize`")
    nv = 0 if features.rtx else nv_tensorrt_version(trt.__version__)
    store = EngineStore(engine_dir)
    calib = _calibration(calibration, calib_source, nv, onnx_bytes, None)
    plan = plan_build(config, features, info, has_calibration=bool(calib))
    profiles, sources = resolve_profiles_with_sources(info, config)
    for name in sorted(n for n, src in sources.items() if src != "--shapes"):
        if src_is_default(sources[name]):
            log.info("optimization profile for dynamic input '%s' made from the default batch %s (set --shapes to "
                     "change)", name, list(config.default_batch))
        else:
            log.info("optimization profile for input '%s' derived from the named %s: %s", name, sources[name],
                     " -> ".join("x".join(map(str, s)) for s in profiles[name]))
    env = (rtx_environment(trt, plan.targets or RTX_DEFAULT_TARGETS, not plan.targets) if features.rtx
           else runtime_environment(trt))
    onnx_sha = sha256_bytes(file_bytes)
    key = cache_key(onnx_sha, config, plan, profiles, f"{flavour_of(trt)} {trt.__version__}", env["gpu"],
                    calib.get("sha256", ""))
    entry = store.entry(key, onnx_path.stem, config.precision, config.sparsity)
    report_bytes = onnx_bytes  # the compiled report is matched against the graph as the user wrote it
    onnx_bytes, target_section = (prepare_for_targets(onnx_bytes, plan.targets, config.strict, onnx_path.name)
                                  if features.rtx else (onnx_bytes, None))
    with store.building(key):
        found = None if rebuild else store.lookup(entry, key)
        if found is not None:
            log.info("reusing engine %s", entry.engine)
            return BuildResult(entry.engine, entry.manifest, found, reused=True)
        if plan.calibrator and calib.get("cache_text") is None:
            calib["cache_out"] = str(entry.engine.with_suffix(".calib.cache"))
        # The shape TensorRT calibrates at: the profile's OPT shape for dynamic inputs, else the static one.
        calib["input_shapes"] = {k: profiles[k][1] if k in profiles else v for k, v in info.inputs.items()}
        t0 = time.perf_counter()
        data, lines, extra = serialize_network(trt, onnx_bytes, onnx_path, config, plan, profiles, features, calib)
        seconds = time.perf_counter() - t0
        calib.update(extra.get("calibrated") or {})
        if features.rtx:  # an RTX engine cannot be deserialized without a GPU: read the build log instead
            io, layers, detailed = extra["io"], [], parse_layers_block(extra["layers"])
        else:
            io, layers, detailed = describe_engine(trt, data, str(entry.engine), host_code=config.version_compatible)
        compiled = _compiled_report(report_bytes, detailed, config, onnx_path.name)
        sections = _sections(data, entry.engine.name, onnx_path, onnx_sha, info, profiles, calib, config, sources)
        sparsity = merge_inspector_sparsity(parse_sparsity_log(lines), layers)
        if features.rtx:  # its AOT build prints no (Sparsity) lines: "0 eligible" would read as "nothing to gain"
            sparsity.unknown_reason = RTX_SPARSITY_UNKNOWN
        precision = {"requested": requested, "built": config.precision,
                     "graph": graph_precision(info.has_qdq, info.has_fp16)[1]}
        build = {"options": config.to_dict(), "plan": plan.to_dict(), "precision": precision}
        manifest = make_manifest(key, env, build, **sections, io=io, targets=target_section,
                                 sparsity=sparsity.to_dict(), build_seconds=round(seconds, 3),
                                 parse_seconds=round(extra["parse_seconds"], 3),
                                 layers={"precisions": precision_counts(layers), "detail": layers or detailed},
                                 compiled=compiled.to_dict(),
                                 log_warnings=[ln for ln in lines if ln.startswith("WARNING")][:50])
        store.save(entry, data, manifest)
    return BuildResult(entry.engine, entry.manifest, manifest, reused=False)


def src_is_default(source: str) -> bool:
    """Whether a profile source (see :func:`resolve_profiles_with_sources`) is the default batch range."""
    return source.startswith("default batch")


def prepare_for_parser(onnx_bytes: bytes, what: str) -> tuple[bytes, dict[str, str]]:
    """The bytes TensorRT parses: placeholder dim names (``"?"``) made unique, else ``onnx_bytes`` unchanged.

    Returns:
        ``(bytes, {"x[2]": "x_dim2", ...})`` (see :func:`trtopt.onnx_graph.with_unique_placeholder_dims`).

    TensorRT reads equal dim names as one dimension; Paddle2ONNX names every unknown dim ``"?"``
    (see :func:`trtopt.onnx_graph.with_unique_placeholder_dims`). The file on disk is not changed, and
    external-data references stay as they are (the parser is given the file's path).

    Raises:
        InputError: The bytes are not an ONNX model.
    """
    import onnx

    from trtopt.onnx_graph import with_unique_placeholder_dims

    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:
        raise InputError(f"{what} is not a valid ONNX model ({type(exc).__name__})") from exc
    fixed, renamed = with_unique_placeholder_dims(model)
    if not renamed:
        return onnx_bytes, {}
    log.info("%s: placeholder dim names renamed for TensorRT (unknown dims are not one shared dim): %s", what,
             ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
    return fixed.SerializeToString(), renamed


def _unnamed(info: Any, renamed: Mapping[str, str]) -> Any:
    """``info`` with the axes renamed by :func:`prepare_for_parser` shown as unnamed (``?``) in messages.

    A renamed axis is unique, so it shares its range with no other input either way.
    """
    if not renamed:
        return info
    import dataclasses

    names = {k: tuple(None if f"{k}[{ax}]" in renamed else n for ax, n in enumerate(v))
             for k, v in info.dim_names.items()}
    return dataclasses.replace(info, dim_names=names)


def _compiled_report(onnx_bytes: bytes, layers: list[dict[str, Any]], config: BuildConfig, what: str
                     ) -> PrecisionReport:
    """Precision report of a build; raises under ``config.strict`` and warns otherwise when INT8 fell back."""
    import onnx

    report = precision_report(onnx.load_from_string(onnx_bytes), layers)
    if config.strict:
        report.raise_if_fallbacks(f"{what}")
    elif report.fallbacks:
        log.warning("%s: %s (%s)", what, report.summary(), "; ".join(report.fallback_lines()))
    return report


def _sections(data: bytes, engine_name: str, onnx_path: Path, onnx_sha: str, info: Any,
              profiles: Mapping[str, tuple[Shape, Shape, Shape]], calib: Mapping[str, Any], config: BuildConfig,
              sources: Mapping[str, str]) -> dict[str, Any]:
    """Manifest sections describing the inputs of a build; profiles say where they came from."""
    return {"engine": {"file": engine_name, "sha256": sha256_bytes(data), "bytes": len(data)},
            "onnx": {"path": str(onnx_path), "sha256": onnx_sha, "has_qdq": info.has_qdq, "has_fp16": info.has_fp16},
            "profiles": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2]),
                             "source": sources.get(k, f"default batch {list(config.default_batch)}")}
                         for k, v in profiles.items()},
            "calibration": {k: v for k, v in calib.items() if k in ("path", "sha256", "header", "cache_out",
                                                                     "calibrator", "batches")} or None,
            "timing_cache": _timing_cache_info(config.timing_cache),
            "memory_pools": {"WORKSPACE": config.workspace_mib << 20 if config.workspace_mib else None}}


def _timing_cache_info(path: str) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    return {"path": path, "sha256": sha256_bytes(Path(path).read_bytes())}
