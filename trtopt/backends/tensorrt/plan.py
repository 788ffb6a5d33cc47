"""Pure planning for TensorRT builds: features, flags per precision, profiles and cache keys.

Everything that is a *decision* (not an API call) lives here and is tested on CPU: which TensorRT
features exist (detected by name, never by version number), which network-creation and builder flags
a precision needs on that feature set, the optimization-profile shapes, and the engine cache key.
:mod:`trtopt.backends.tensorrt.loader` only turns a :class:`BuildPlan` into API calls.

TensorRT 11 removed weak typing (``BuilderFlag.FP16/INT8``, calibrators); every network is strongly
typed, so the ONNX graph's own types decide precision there (brief §1.1). TensorRT 10 has both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from trtopt.backends.tensorrt.api import INSTANCE_VARS as INSTANCE_VARS
from trtopt.backends.tensorrt.api import USED_API as USED_API
from trtopt.backends.tensorrt.api import WEAK_TYPING_FUNCTIONS as WEAK_TYPING_FUNCTIONS
from trtopt.backends.tensorrt.config import BuildConfig, graph_precision
from trtopt.backends.tensorrt.flavour import rtx_plan_rules
from trtopt.errors import ConfigError
from trtopt.fileio import sha256_bytes

# -- features --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What the running TensorRT offers, detected by attribute names.

    Attributes:
        weak_typing: ``BuilderFlag.FP16``/``INT8`` and the INT8 calibrators exist (TensorRT 10.x).
        same_compute_capability: ``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` exists (10.9+).
        rtx: TensorRT for RTX (``ComputeCapability`` exists): builds for target architectures without a
            GPU; no hardware compatibility level, no-op timing cache.
    """

    weak_typing: bool
    same_compute_capability: bool = False
    rtx: bool = False


def detect_features(has: Callable[[str], bool]) -> Features:
    """Detect features from a name predicate (``has("BuilderFlag.INT8")``).

    Args:
        has: Whether ``trt.<dotted name>`` exists; :func:`has_attr_chain` for the imported module,
            or :meth:`BindingsAPI.has` for a bindings wheel read without importing it.

    Returns:
        The feature set.
    """
    weak = all(has(n) for n in ("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2",
                                "IBuilderConfig.int8_calibrator"))
    return Features(weak_typing=weak, same_compute_capability=has("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"),
                    rtx=has("ComputeCapability"))


def has_attr_chain(obj: object, dotted: str) -> bool:
    """Whether ``obj.<dotted>`` resolves (``hasattr`` along the chain)."""
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def nv_tensorrt_version(version: str) -> int:
    """``NV_TENSORRT_VERSION`` for a ``tensorrt.__version__`` string (``"10.3.0.26"`` -> 100300).

    Raises:
        ConfigError: Not a TensorRT version string.
    """
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ConfigError(f"not a TensorRT version: '{version}'")
    major, minor, patch = (int(g) for g in m.groups())
    # 8.x headers use major*1000 (+minor*100+patch); 10.x and later use major*10000.
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch


# -- the ONNX graph --------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphInfo:
    """What the plan needs to know about the ONNX model.

    Attributes:
        inputs: Input name -> shape (``-1`` for a dynamic axis), initializers excluded.
        has_qdq: The graph holds QuantizeLinear/DequantizeLinear (explicit INT8).
        has_fp16: Some tensor, input or initializer is float16 (an FP16-typed graph).
        dim_names: Input name -> the ``dim_param`` of each axis (``None`` where unnamed).
        dtypes: Input name -> spec dtype name (``float32``, ``int64``, ...), for messages.
    """

    inputs: dict[str, tuple[int, ...]]
    has_qdq: bool = False
    has_fp16: bool = False
    dim_names: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)


def graph_info(model_bytes: bytes) -> GraphInfo:
    """Read :class:`GraphInfo` from serialized ONNX bytes (external data is not needed)."""
    import onnx

    from trtopt.errors import InputError

    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:
        raise InputError(f"not a valid ONNX model ({type(exc).__name__})") from exc
    g = model.graph
    inits = {i.name for i in g.initializer}
    from trtopt.onnx_graph import model_computes_fp16, value_dim_names

    inputs, names, dtypes = {}, {}, {}
    for vi in g.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        inputs[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims)
        names[vi.name] = value_dim_names(vi)
        elem = vi.type.tensor_type.elem_type
        dtypes[vi.name] = "bool" if elem == onnx.TensorProto.BOOL else (
            onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "float32")

    has_fp16 = model_computes_fp16(model)  # Constant-node weights and subgraphs count too
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node)
    return GraphInfo(inputs=inputs, has_qdq=has_qdq, has_fp16=has_fp16, dim_names=names, dtypes=dtypes)


# -- profiles --------------------------------------------------------------------------------

Shape = tuple[int, ...]


def parse_shape(text: str, what: str) -> Shape:
    """Parse ``"1x3x224x224"`` into a tuple of positive ints."""
    try:
        dims = tuple(int(t) for t in text.strip().lower().split("x"))
    except ValueError:
        raise ConfigError(f"{what}: shape '{text}' must look like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"{what}: shape '{text}' must have positive dimensions")
    return dims


def parse_shapes(specs: Sequence[str]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Parse ``--shapes`` entries ``name:MIN,OPT,MAX`` (or ``name:SHAPE`` for a static input).

    Raises:
        ConfigError: Malformed entry, duplicate name, rank mismatch, or not ``min <= opt <= max``.
    """
    out: dict[str, tuple[Shape, Shape, Shape]] = {}
    for spec in specs:
        name, sep, rest = spec.rpartition(":")
        if not sep or not name:
            raise ConfigError(f"--shapes entry '{spec}' must be NAME:MIN,OPT,MAX (e.g. input:1x3x8x8,8x3x8x8,32x3x8x8)")
        parts = rest.split(",")
        if len(parts) not in (1, 3):
            raise ConfigError(f"--shapes entry '{spec}' needs one shape or three (min,opt,max)")
        shapes = [parse_shape(p, f"--shapes {name}") for p in parts]
        mn, opt, mx = shapes if len(shapes) == 3 else shapes * 3
        if name in out:
            raise ConfigError(f"--shapes names input '{name}' twice")
        if not len(mn) == len(opt) == len(mx):
            raise ConfigError(f"--shapes {name}: min, opt and max must have the same rank")
        for a, b, label in ((mn, opt, "min > opt"), (opt, mx, "opt > max")):
            if any(x > y for x, y in zip(a, b)):
                raise ConfigError(f"--shapes {name}: {label} ({'x'.join(map(str, a))} vs {'x'.join(map(str, b))});"
                                  " need min <= opt <= max in every dimension")
        out[name] = (mn, opt, mx)
    return out


def resolve_profiles(info: GraphInfo, config: BuildConfig) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Profile (min, opt, max) per dynamic input: ``config.shapes`` first, else the default batch range.

    Raises:
        ConfigError: Unknown input, shape that contradicts a static dimension, a dynamic input
            (beyond the batch axis) without ``--shapes``, or varying shapes on a DLA build.
    """
    return resolve_profiles_with_sources(info, config)[0]


def resolve_profiles_with_sources(info: GraphInfo, config: BuildConfig
                                  ) -> tuple[dict[str, tuple[Shape, Shape, Shape]], dict[str, str]]:
    """:func:`resolve_profiles` plus where each profile came from (for the manifest and the build notes).

    An input that ``config.shapes`` does not name, with dynamic axes beyond the batch, gets its profile
    from the inputs that are named when every one of its dynamic axes carries a ``dim_param`` that a
    named input also carries: TensorRT treats equal dim names as one dimension, so ``attention_mask``
    ``[batch, seq]`` must take the range that ``input_ids`` ``[batch, seq]`` was given.

    Returns:
        ``(profiles, {input: "--shapes" | "default batch [..]" | "dims batch, seq of input_ids"})``.
    """
    given = parse_shapes(config.shapes)
    unknown = sorted(set(given) - set(info.inputs))
    if unknown:
        raise ConfigError(f"--shapes names unknown input(s) {unknown}; model inputs: {sorted(info.inputs)}")
    ranges = _named_ranges(info, given)
    out, sources = {}, {}
    for name, dims in info.inputs.items():
        if name in given:
            for s in given[name]:
                if len(s) != len(dims) or any(d > 0 and d != v for d, v in zip(dims, s)):
                    raise ConfigError(f"--shapes {name}: {'x'.join(map(str, s))} does not fit the model's "
                                      f"shape {_fmt(dims)}")
            out[name], sources[name] = given[name], "--shapes"
        elif any(d < 0 for d in dims):
            derived = _derive(name, dims, info, ranges)
            if derived is not None:
                out[name], sources[name] = derived
            elif any(d < 0 for d in dims[1:]):
                raise ConfigError(_missing_profile_message(name, dims, info, ranges))
            else:
                out[name] = tuple((b, *dims[1:]) for b in config.default_batch)  # type: ignore[assignment]
                sources[name] = f"default batch {list(config.default_batch)}"
    if config.dla_core >= 0:
        dynamic = sorted(n for n, (mn, _opt, mx) in out.items() if mn != mx)
        if dynamic:
            raise ConfigError(f"DLA needs static shapes (min = opt = max) but {dynamic} vary: pass --shapes "
                              f"{dynamic[0]}:SHAPE")
    return out, sources


def _named_ranges(info: GraphInfo, given: Mapping[str, tuple[Shape, Shape, Shape]]
                  ) -> dict[str, tuple[tuple[int, int, int], str]]:
    """``{dim name: ((min, opt, max), input it was read from)}`` from the named axes of the given profiles."""
    out: dict[str, tuple[tuple[int, int, int], str]] = {}
    for name, (mn, opt, mx) in given.items():
        for ax, dim in enumerate(info.dim_names.get(name, ())):
            if dim and ax < len(mn) and dim not in out:  # first given input wins; TensorRT checks the rest
                out[dim] = ((mn[ax], opt[ax], mx[ax]), name)
    return out


def _derive(name: str, dims: Sequence[int], info: GraphInfo,
            ranges: Mapping[str, tuple[tuple[int, int, int], str]]) -> tuple[tuple[Shape, Shape, Shape], str] | None:
    """The profile of ``name`` from named dims shared with given inputs, or None unless every dynamic axis is."""
    names = info.dim_names.get(name, ())
    if len(names) != len(dims) or not ranges:
        return None
    shapes: list[list[int]] = [[], [], []]
    used, sources = [], []
    for ax, d in enumerate(dims):
        if d > 0:
            for s in shapes:
                s.append(d)
            continue
        if names[ax] not in ranges:
            return None
        rng, src = ranges[names[ax]]
        for s, v in zip(shapes, rng):
            s.append(v)
        used.append(str(names[ax]))
        if src not in sources:
            sources.append(src)
    mn, opt, mx = (tuple(s) for s in shapes)
    return (mn, opt, mx), f"dims {', '.join(used)} of {', '.join(sources)}"


def _missing_profile_message(name: str, dims: Sequence[int], info: GraphInfo,
                             ranges: Mapping[str, tuple[tuple[int, int, int], str]]) -> str:
    """One line naming the input, its dims as the graph names them, and both ways to give a profile.

    The suggested ``--input`` spec carries the range a named dim already has from another input.
    """
    names = info.dim_names.get(name) or (None,) * len(dims)
    shown = "(" + ", ".join(str(d) if d > 0 else (n or "?") for d, n in zip(dims, names)) + ")"

    def dim(d: int, n: str | None) -> str:
        if d > 0:
            return str(d)
        rng = "..".join(map(str, ranges[n][0])) if n in ranges else "1..8..32"
        return f"{n}={rng}" if n and _SPEC_NAME.match(n) else rng

    # a spec's dims are split at "x": a graph dim name holding an x is left out of the suggestion
    spec = "x".join(dim(d, n) if n or ax else dim(d, "batch") for ax, (d, n) in enumerate(zip(dims, names)))
    dtype = info.dtypes.get(name, "float32")
    return (f"input '{name}' has dynamic dimensions {shown}: pass --input {name}:{dtype}:{spec} (your ranges) "
            f"or --shapes {name}:MIN,OPT,MAX (e.g. {name}:{_example(dims)})")


_SPEC_NAME = re.compile(r"^[A-Za-wyz_][A-Za-wyz0-9_]*$")


def _fmt(dims: Sequence[int]) -> str:
    return "(" + ", ".join("?" if d < 0 else str(d) for d in dims) + ")"


def _example(dims: Sequence[int]) -> str:
    return ",".join("x".join(str(b if d < 0 else d) for d in dims) for b in (1, 8, 32))


# -- flag plan -------------------------------------------------------------------------------


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
        from trtopt.optional import install_hint

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
              profiles: Mapping[str, tuple[Shape, Shape, Shape]], trt_version: str, gpu: Mapping[str, object],
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
