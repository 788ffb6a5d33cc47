"""The build plan: which network-creation and builder flags a precision needs, and the engine cache key.

Everything here is a *decision* (not an API call), tested on CPU: given the detected
:class:`~trtopt.backends.tensorrt.features.Features`, the model's
:class:`~trtopt.backends.tensorrt.graph.GraphInfo` and the :class:`BuildConfig`, :func:`plan_build`
says how to create the network and what to set on the builder config;
:mod:`trtopt.backends.tensorrt.network` turns the plan into API calls.

TensorRT 11 and TensorRT for RTX are strongly typed only: the graph's own types decide precision,
and an impossible request is refused with the command that makes the right graph. TensorRT 10 also
builds FP32 graphs weakly typed with ``BuilderFlag.FP16``/``INT8``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from trtopt.backends.tensorrt.config import BuildConfig, graph_precision
from trtopt.backends.tensorrt.features import Features
from trtopt.backends.tensorrt.flavour import rtx_plan_rules
from trtopt.backends.tensorrt.graph import GraphInfo
from trtopt.backends.tensorrt.profiles import Ranges
from trtopt.errors import ConfigError
from trtopt.fileio import sha256_bytes
from trtopt.optional import install_hint


@dataclass(frozen=True)
class BuildPlan:
    """Flags and calibrator use for one build, by enum **name**.

    Attributes:
        strongly_typed: Create the network with ``STRONGLY_TYPED`` (graph types decide precision).
        network_flags: ``NetworkDefinitionCreationFlag`` names.
        builder_flags: ``BuilderFlag`` names to set.
        cleared_flags: ``BuilderFlag`` names to clear (``TF32`` unless allowed).
        calibrator: Attach an entropy calibrator (implicit INT8, weak typing only).
        hardware_compat: ``HardwareCompatibilityLevel`` name.
        profiling_verbosity: ``ProfilingVerbosity`` name.
        notes: Human-readable remarks recorded in the manifest.
        targets: TensorRT-RTX ``ComputeCapability`` names to set (empty: none set, or not RTX).
        rtx: The plan is for TensorRT for RTX (hardware compatibility level and timing cache skipped).
    """

    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...]
    calibrator: bool
    hardware_compat: str
    profiling_verbosity: str
    notes: tuple[str, ...] = field(default=())
    targets: tuple[str, ...] = field(default=())
    rtx: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON form (manifests, cache keys)."""
        rtx = {"flavour": "tensorrt-rtx", "compute_capabilities": list(self.targets)} if self.rtx else {}
        return {**rtx, "strongly_typed": self.strongly_typed, "network_flags": list(self.network_flags),
                "builder_flags": list(self.builder_flags), "cleared_flags": list(self.cleared_flags),
                "calibrator": "EntropyCalibration2" if self.calibrator else None,
                "hardware_compatibility_level": self.hardware_compat,
                "profiling_verbosity": self.profiling_verbosity, "notes": list(self.notes)}


_QUANTIZE_HINT = "run `trtopt quantize MODEL.onnx --calib TABLE.json --out q.onnx` first and build the Q/DQ model"
_FP16_HINT = "run `trtopt quantize MODEL.onnx --fp16 --out m16.onnx` first and build the FP16 model"


def _precision_flags(precision: str, features: Features, info: GraphInfo, has_calibration: bool
                     ) -> tuple[bool, list[str], bool, list[str]]:
    """(strongly_typed, builder flags, calibrator, notes) for a precision; see :func:`plan_build`."""
    weak = features.weak_typing
    if precision == "auto":  # the graph's own types, as a strongly typed build has them
        precision = graph_precision(info.has_qdq, info.has_fp16)[0]
    if precision == "fp32":
        if info.has_qdq or info.has_fp16:
            holds = graph_precision(info.has_qdq, info.has_fp16)[1]
            raise ConfigError(f"precision fp32 was asked but the model holds {holds}, which a strongly typed build "
                              "keeps: leave --precision out (the graph's own types decide) or build the FP32 model")
        return True, [], False, []
    if precision == "fp16":
        if info.has_fp16 and not info.has_qdq:
            return True, [], False, ["FP16-typed graph built strongly typed"]
        if info.has_qdq:
            raise ConfigError("precision fp16 was asked but the model holds Q/DQ nodes; use --precision int8+fp16")
        if not weak:
            raise ConfigError(f"this TensorRT is strongly typed only (11.x has no FP16 builder flag): {_FP16_HINT}")
        return False, ["FP16"], False, ["implicit FP16 (weakly typed network, BuilderFlag.FP16)"]
    if precision in ("int8", "int8+fp16"):
        extra = ["FP16"] if precision == "int8+fp16" else []
        if info.has_qdq and (not extra or info.has_fp16):
            return True, [], False, ["Q/DQ graph built strongly typed (explicit quantization)"]
        if not weak:
            hint = _FP16_HINT.replace("--fp16", "--calib TABLE.json --fp16-rest") if info.has_qdq else _QUANTIZE_HINT
            raise ConfigError(f"this TensorRT is strongly typed only (11.x has no INT8/FP16 builder flags or "
                              f"calibrators), so {precision} needs a Q/DQ{' FP16' if extra else ''} graph: {hint}")
        if info.has_qdq:  # 10.x: FP16 remainder of an FP32 Q/DQ graph through the weak-typed flags
            return False, ["INT8", *extra], False, ["Q/DQ graph, weakly typed with BuilderFlag.FP16 for the rest"]
        if not has_calibration:
            raise ConfigError(f"implicit {precision} (no Q/DQ in the model) needs calibration: pass --calib "
                              "TABLE_OR_CACHE (or a calibration source), or build a Q/DQ model")
        return False, ["INT8", *extra], True, ["implicit INT8, calibrated by Polygraphy's Calibrator"]
    # best: every precision TensorRT may use on this feature set
    if not weak:
        return True, [], False, ["best on a strongly typed TensorRT = the graph's own types"]
    int8 = info.has_qdq or has_calibration
    flags = ["FP16", *(["INT8"] if int8 else [])]
    notes = [] if int8 else ["best without calibration or Q/DQ: INT8 not enabled"]
    return False, flags, int8 and not info.has_qdq, notes


def plan_build(config: BuildConfig, features: Features, info: GraphInfo, has_calibration: bool = False) -> BuildPlan:
    """Decide network/builder flags for ``config`` on a TensorRT with ``features``.

    Args:
        config: Build options.
        features: Detected TensorRT features.
        info: The model's inputs and typing.
        has_calibration: A calibration table/cache or source is available (implicit INT8).

    Returns:
        The plan.

    Raises:
        ConfigError: The precision/feature combination is impossible (message says what to do).
    """
    strong, flags, calib, notes = _precision_flags(config.precision, features, info, has_calibration)
    if config.sparsity:
        flags.append("SPARSE_WEIGHTS")
    if config.version_compatible:
        flags.append("VERSION_COMPATIBLE")
        if config.exclude_lean_runtime:
            flags.append("EXCLUDE_LEAN_RUNTIME")
    if config.dla_core >= 0:
        if not features.weak_typing:
            raise ConfigError("DLA builds need TensorRT 10.x (JetPack 6); 11.x DLA (JetPack 7.2.2+) is not supported")
        if strong or not {"FP16", "INT8"} & set(flags):
            raise ConfigError("DLA needs --precision fp16, int8 or int8+fp16 on an FP32 model (weakly typed)")
        flags.append("GPU_FALLBACK")
    if config.tf32:
        notes.append("TF32 allowed for FP32 math")
    hw = config.hardware_compat.upper()
    targets: tuple[str, ...] = ()
    if features.rtx:
        hw, targets = rtx_plan_rules(config, notes)
    elif config.compute_capabilities:
        raise ConfigError("--compute-capability chooses TensorRT for RTX targets; this is TensorRT 10/11, which "
                          f"builds for the local GPU (use --backend tensorrt-rtx: {install_hint('tensorrt-rtx')})")
    if hw == "SAME_COMPUTE_CAPABILITY" and not features.same_compute_capability:
        raise ConfigError("hardware_compat same_compute_capability needs TensorRT 10.9 or newer")
    return BuildPlan(targets=targets, rtx=features.rtx, strongly_typed=strong,
                     network_flags=("STRONGLY_TYPED",) if strong else (),
                     builder_flags=tuple(dict.fromkeys(flags)), cleared_flags=() if config.tf32 else ("TF32",),
                     calibrator=calib, hardware_compat=hw, profiling_verbosity=config.profiling_verbosity.upper(),
                     notes=tuple(notes))


def cache_key(onnx_sha256: str, config: BuildConfig, plan: BuildPlan,
              profiles: Ranges, trt_version: str, gpu: Mapping[str, object],
              calibration_sha256: str = "") -> str:
    """Content hash naming an engine: model bytes, options (enum names), TensorRT version and GPU.

    The timing cache is left out on purpose: it changes build time, not what was asked for.
    """
    options = config.to_dict()
    for k in ("timing_cache", "strict", "backend"):  # no effect on the engine (the flavour is in the plan)
        options.pop(k, None)
    doc = {"onnx": onnx_sha256, "options": options, "plan": plan.to_dict(),
           "profiles": {k: [list(s) for s in v] for k, v in sorted(profiles.items())},
           "tensorrt": trt_version,
           "gpu": {"name": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
                   "targets": gpu.get("targets")},
           "calibration": calibration_sha256}
    return sha256_bytes(json.dumps(doc, sort_keys=True).encode("utf-8"))
