"""Build (or reuse) an engine in the store, one step after another.

:func:`build_engine` sequences the steps, each a function of its own module:

1. read the model: :func:`~trtopt.backends.tensorrt.graph.read_model` (parser bytes, graph info);
2. plan: :func:`~trtopt.backends.tensorrt.plan.plan_build` and
   :func:`~trtopt.backends.tensorrt.profiles.resolve_profiles_with_sources`;
3. key the engine and look it up in the :class:`~trtopt.backends.tensorrt.store.EngineStore`;
4. parse, configure, serialize: :func:`~trtopt.backends.tensorrt.network.serialize_network`;
5. describe: :func:`~trtopt.backends.tensorrt.describe.describe_build` (the manifest);
6. store the engine and its manifest.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.backends.tensorrt.calibrator import cache_text_for
from trtopt.backends.tensorrt.config import RTX_DEFAULT_TARGETS, BuildConfig, graph_precision
from trtopt.backends.tensorrt.describe import BuiltEngine, describe_build
from trtopt.backends.tensorrt.features import nv_tensorrt_version, tensorrt_features
from trtopt.backends.tensorrt.flavour import flavour_of, import_tensorrt, rtx_environment
from trtopt.backends.tensorrt.graph import GraphInfo, read_model
from trtopt.backends.tensorrt.manifest import runtime_environment
from trtopt.backends.tensorrt.network import serialize_network
from trtopt.backends.tensorrt.plan import cache_key, plan_build
from trtopt.backends.tensorrt.profiles import GIVEN, Ranges, resolve_profiles_with_sources, src_is_default
from trtopt.backends.tensorrt.store import EngineStore
from trtopt.backends.tensorrt.targets import prepare_for_targets
from trtopt.errors import ConfigError
from trtopt.fileio import sha256_bytes
from trtopt.log import get_logger

log = get_logger(__name__)


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


def calibration_inputs(calibration: str | os.PathLike[str] | None, source: Iterable[Any] | None, nv: int,
                       onnx_bytes: bytes) -> dict[str, Any]:
    """Calibration inputs for the plan: cache text from a table/cache file, or a data source.

    Returns:
        ``{}`` without calibration; else ``source``, ``cache_text`` and ``cache_out``, plus ``path``,
        ``sha256`` and ``header`` of the cache made from ``calibration``.
    """
    if calibration is None:
        return {"source": source, "cache_text": None, "cache_out": None} if source is not None else {}
    import onnx

    g = onnx.load_from_string(onnx_bytes).graph
    names = {t for n in g.node for t in n.output} | {i.name for i in g.input}
    text = cache_text_for(calibration, nv, names)
    return {"source": source, "cache_text": text, "cache_out": None, "path": str(calibration),
            "sha256": sha256_bytes(text.encode("ascii")), "header": text.splitlines()[0]}


def log_profile_sources(profiles: Ranges, sources: dict[str, str], config: BuildConfig) -> None:
    """Say (INFO) where each profile the caller did not give came from."""
    for name in sorted(n for n, src in sources.items() if src != GIVEN):
        if src_is_default(sources[name]):
            log.info("optimization profile for dynamic input '%s' made from the default batch %s (set --shapes to "
                     "change)", name, list(config.default_batch))
        else:
            log.info("optimization profile for input '%s' derived from the named %s: %s", name, sources[name],
                     " -> ".join("x".join(map(str, s)) for s in profiles[name]))


def calibration_shapes(info: GraphInfo, profiles: Ranges) -> dict[str, tuple[int, ...]]:
    """The shape TensorRT calibrates at: the profile's OPT shape for dynamic inputs, else the static one."""
    return {k: profiles[k][1] if k in profiles else v for k, v in info.inputs.items()}


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
    config = config or BuildConfig()
    trt = import_tensorrt(config.backend)
    model = read_model(onnx_path)
    info, requested = model.info, config.precision
    if requested == "auto":  # the graph's own types decide (strongly typed), recorded as the precision built
        config = dataclasses.replace(config, precision=graph_precision(info.has_qdq, info.has_fp16)[0])
    features = tensorrt_features(trt)
    if features.rtx and (calibration is not None or calib_source is not None):
        raise ConfigError("TensorRT for RTX has no INT8 calibrators: build a Q/DQ model made by `trtopt quantize`")
    nv = 0 if features.rtx else nv_tensorrt_version(trt.__version__)
    store = EngineStore(engine_dir)
    calib = calibration_inputs(calibration, calib_source, nv, model.parser_bytes)
    plan = plan_build(config, features, info, has_calibration=bool(calib))
    profiles, sources = resolve_profiles_with_sources(info, config)
    log_profile_sources(profiles, sources, config)
    env = (rtx_environment(trt, plan.targets or RTX_DEFAULT_TARGETS, not plan.targets) if features.rtx
           else runtime_environment(trt))
    key = cache_key(sha256_bytes(model.file_bytes), config, plan, profiles, f"{flavour_of(trt)} {trt.__version__}",
                    env["gpu"], calib.get("sha256", ""))
    entry = store.entry(key, model.path.stem, config.precision, config.sparsity)
    onnx_bytes, target_section = (prepare_for_targets(model.parser_bytes, plan.targets, config.strict, model.path.name)
                                  if features.rtx else (model.parser_bytes, None))
    with store.building(key):
        found = None if rebuild else store.lookup(entry, key)
        if found is not None:
            log.info("reusing engine %s", entry.engine)
            return BuildResult(entry.engine, entry.manifest, found, reused=True)
        if plan.calibrator and calib.get("cache_text") is None:
            calib["cache_out"] = str(entry.engine.with_suffix(".calib.cache"))
        calib["input_shapes"] = calibration_shapes(info, profiles)
        t0 = time.perf_counter()
        data, lines, extra = serialize_network(trt, onnx_bytes, model.path, config, plan, profiles, features, calib)
        built = BuiltEngine(data, lines, extra, time.perf_counter() - t0)
        calib.update(extra.get("calibrated") or {})
        manifest = describe_build(trt, built, entry.engine, key, env, model, config, requested, plan,
                                  (profiles, sources), calib, target_section)
        store.save(entry, data, manifest)
    return BuildResult(entry.engine, entry.manifest, manifest, reused=False)
