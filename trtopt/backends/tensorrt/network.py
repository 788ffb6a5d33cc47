"""TensorRT API calls from ONNX bytes to a serialized engine: parse, configure, calibrate, serialize.

Each step is one function that applies a decision made elsewhere (:mod:`~trtopt.backends.tensorrt.plan`,
:mod:`~trtopt.backends.tensorrt.profiles`); :func:`serialize_network` runs them in order. Variable
names for TensorRT objects follow :data:`~trtopt.backends.tensorrt.api.INSTANCE_VARS` (``builder``,
``network``, ``parser``, ``trt_config``, ...) so the API-check test can find every attribute used.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtopt.backends.tensorrt.calibrator import CalibrationFeed, finish_calibration, make_calibrator
from trtopt.backends.tensorrt.config import BuildConfig
from trtopt.backends.tensorrt.features import Features
from trtopt.backends.tensorrt.flavour import flavour_of, label, make_logger
from trtopt.backends.tensorrt.logparse import build_failure, format_parser_errors
from trtopt.backends.tensorrt.plan import BuildPlan
from trtopt.backends.tensorrt.profiles import Ranges
from trtopt.errors import BuildError, ConfigError
from trtopt.fileio import atomic_write_bytes
from trtopt.log import get_logger

log = get_logger(__name__)


def create_network(trt: Any, builder: Any, plan: BuildPlan) -> Any:
    """An empty network with the plan's creation flags (``STRONGLY_TYPED`` or none)."""
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return builder.create_network(flags)


def parse_into(trt: Any, logger: Any, network: Any, onnx_bytes: bytes, onnx_path: Path) -> None:
    """Parse ``onnx_bytes`` into ``network``; ``onnx_path`` lets the parser find external data.

    Raises:
        BuildError: The parser refused the model (node, operator and message of each error).
    """
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


def configure(trt: Any, builder: Any, trt_config: Any, config: BuildConfig, plan: BuildPlan,
              profiles: Ranges) -> Any:
    """Apply the plan and the profiles to the builder config.

    Returns:
        The optimization profile added (None when no input is dynamic).

    Raises:
        ConfigError: A DLA core the device does not have.
    """
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


def attach_calibrator(trt: Any, trt_config: Any, profile: Any, calibration: Mapping[str, Any]) -> Any:
    """Implicit INT8 (TensorRT 10.x only): attach Polygraphy's calibrator and the calibration profile.

    Args:
        trt: The imported TensorRT module.
        trt_config: The builder config.
        profile: The optimization profile (None for static inputs); calibration runs at its OPT shape.
        calibration: ``source`` (batches), ``input_shapes`` (the OPT shape per input) and
            ``cache_text`` (a TensorRT cache to reuse, or None).
    """
    feed = CalibrationFeed(calibration.get("source"), calibration.get("input_shapes", {}))
    calib = make_calibrator(trt, feed, calibration.get("cache_text"))
    trt_config.int8_calibrator = calib
    if profile is not None:  # mandatory for dynamic shapes; TensorRT calibrates at its OPT shape
        trt_config.set_calibration_profile(profile)
    return calib


def load_timing_cache(trt_config: Any, path: str) -> None:
    """Give the builder the timing cache in ``path`` (a fresh one when missing or made elsewhere)."""
    prev = Path(path).read_bytes() if path and Path(path).is_file() else b""
    timing_cache = trt_config.create_timing_cache(prev)
    if not trt_config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("timing cache %s was made on another device or TensorRT version; starting a fresh one", path)
        timing_cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(timing_cache, ignore_mismatch=False)


def save_timing_cache(trt_config: Any, path: str) -> None:
    """Write the builder's timing cache to ``path`` (atomically)."""
    timing_cache = trt_config.get_timing_cache()
    atomic_write_bytes(path, bytes(timing_cache.serialize()))


def network_io(network: Any) -> list[dict[str, Any]]:
    """Engine I/O read from the parsed network (used where the engine cannot be deserialized: no GPU)."""
    io = []
    for mode, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for i in range(count):
            tensor = get(i)
            io.append({"name": tensor.name, "mode": mode, "dtype": tensor.dtype.name, "shape": list(tensor.shape)})
    return io


def serialize_network(trt: Any, onnx_bytes: bytes, onnx_path: Path, config: BuildConfig, plan: BuildPlan,
                      profiles: Ranges, features: Features,
                      calibration: Mapping[str, Any] | None = None) -> tuple[bytes, list[str], dict[str, Any]]:
    """Parse ``onnx_bytes`` and build a serialized engine following ``plan``.

    Returns:
        ``(plan bytes, captured INFO+ log lines, extra)``; ``extra`` holds ``layers`` (the VERBOSE
        ``Layers:`` block or ""), ``io`` (network I/O), ``parse_seconds`` and ``calibrated``.

    Raises:
        BuildError: Parse or build failure, naming node, operator and message.
    """
    logger = make_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = create_network(trt, builder, plan)
    t0 = time.perf_counter()
    parse_into(trt, logger, network, onnx_bytes, onnx_path)
    parse_seconds = time.perf_counter() - t0
    trt_config = builder.create_builder_config()
    profile = configure(trt, builder, trt_config, config, plan, profiles)
    if config.timing_cache and not plan.rtx:  # RTX: a no-op that warns on every call
        load_timing_cache(trt_config, config.timing_cache)
    calib = None
    if plan.calibrator and features.weak_typing:
        calib = attach_calibrator(trt, trt_config, profile, calibration or {})
    serialized = builder.build_serialized_network(network, trt_config)
    calibrated = None
    if calib is not None:
        # A failed build leaves no cache behind in the store (nothing half-made beside a missing engine).
        calibrated = finish_calibration(calib, (calibration or {}).get("cache_out") if serialized is not None else None)
    if serialized is None:
        raise build_failure(logger.lines)
    if config.timing_cache and not plan.rtx:
        save_timing_cache(trt_config, config.timing_cache)
    return bytes(serialized), list(logger.lines), {"layers": logger.layers, "io": network_io(network),
                                                   "parse_seconds": parse_seconds, "calibrated": calibrated}
