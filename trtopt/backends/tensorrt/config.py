"""Build options of the TensorRT backend (one frozen, TOML-friendly dataclass)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from trtopt.backends.tensorrt.targets import GPUS, runtime_instead
from trtopt.errors import ConfigError

#: ``auto`` (the default): the graph's own types decide, as in a strongly typed build (``trtexec
#: --stronglyTyped``); the others choose builder flags where TensorRT 10 builds weakly typed.
PRECISIONS = ("auto", "fp32", "fp16", "int8", "int8+fp16", "best")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
PROFILING_VERBOSITY = ("detailed", "layer_names_only", "none")
#: ``--backend`` names: ``tensorrt`` (TensorRT 10/11, else TensorRT for RTX when only that is installed)
#: and ``tensorrt-rtx`` (TensorRT for RTX, builds without a GPU).
FLAVOURS = ("tensorrt", "tensorrt-rtx")
#: ``ComputeCapability`` members of TensorRT for RTX 1.7 (``CURRENT`` needs a GPU, so it is not offered).
RTX_TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
#: What TensorRT-RTX builds for when no target is set (Ampere and later; measured, facts doc).
RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120")


#: A concrete tensor shape (every dimension positive).
Shape = tuple[int, ...]


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def profile_problem(name: str, mn: Shape, opt: Shape, mx: Shape) -> str | None:
    """What is wrong with a (min, opt, max) profile of input ``name``, or None when it is valid.

    The text starts with the input name (callers prefix where it came from: ``--shapes``, ``profile``).
    """
    if not mn or any(d <= 0 for s in (mn, opt, mx) for d in s):
        return f"{name}: shapes must have positive dimensions ({_fmt(mn)}, {_fmt(opt)}, {_fmt(mx)})"
    if not len(mn) == len(opt) == len(mx):
        return f"{name}: min, opt and max must have the same rank"
    for a, b, label in ((mn, opt, "min > opt"), (opt, mx, "opt > max")):
        if any(x > y for x, y in zip(a, b)):
            return f"{name}: {label} ({_fmt(a)} vs {_fmt(b)}); need min <= opt <= max in every dimension"
    return None


@dataclass(frozen=True)
class Profile:
    """The optimization-profile range of one dynamic input.

    Attributes:
        name: Graph input name.
        min: Smallest shape (profile MIN).
        opt: The shape TensorRT tunes for (profile OPT; implicit INT8 calibrates at it).
        max: Largest shape (profile MAX).

    Raises:
        ConfigError: Ranks differ, a dimension is not positive, or not ``min <= opt <= max``.
    """

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        shapes = [tuple(int(d) for d in s) for s in (self.min, self.opt, self.max)]  # TOML gives lists
        for attr, s in zip(("min", "opt", "max"), shapes):
            object.__setattr__(self, attr, s)
        problem = profile_problem(self.name, *shapes)
        if problem:
            raise ConfigError(f"profile {problem}")

    @classmethod
    def static(cls, name: str, shape: Sequence[int]) -> Profile:
        """A profile with ``min = opt = max = shape``."""
        return cls(name, tuple(shape), tuple(shape), tuple(shape))

    def shapes(self) -> tuple[Shape, Shape, Shape]:
        """``(min, opt, max)``."""
        return self.min, self.opt, self.max

    def __str__(self) -> str:
        """``name:MIN,OPT,MAX`` (``name:SHAPE`` when static), as ``--shapes`` spells it."""
        if self.min == self.opt == self.max:
            return f"{self.name}:{_fmt(self.opt)}"
        return f"{self.name}:{_fmt(self.min)},{_fmt(self.opt)},{_fmt(self.max)}"


def _profiles(items: Sequence[Any]) -> tuple[Profile, ...]:
    """``BuildConfig.shapes`` as Profiles: Profile objects, or TOML tables ``{name, min, opt, max}``."""
    out: list[Profile] = []
    for p in items:
        if isinstance(p, str):
            raise ConfigError(f"BuildConfig.shapes takes Profile objects, not text ('{p}'): parse --shapes text "
                              "with trtopt.backends.tensorrt.profiles.parse_shapes")
        out.append(p if isinstance(p, Profile) else Profile(**dict(p)))
    names = [p.name for p in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"the optimization profile names input(s) {twice} twice")
    return tuple(out)


def graph_precision(has_qdq: bool, has_fp16: bool) -> tuple[str, str]:
    """The precision a strongly typed build of a graph has, and what the graph holds, in words.

    Args:
        has_qdq: The graph holds QuantizeLinear/DequantizeLinear.
        has_fp16: Some tensor of the graph is FP16.

    Returns:
        ``("int8", "Q/DQ INT8, FP32 elsewhere")``, ``("int8+fp16", ...)``, ``("fp16", "FP16")`` or
        ``("fp32", "FP32")``.
    """
    if has_qdq:
        return ("int8+fp16", "Q/DQ INT8, FP16 elsewhere") if has_fp16 else ("int8", "Q/DQ INT8, FP32 elsewhere")
    return ("fp16", "FP16 tensors") if has_fp16 else ("fp32", "FP32 only")


def parse_compute_capabilities(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Parse ``"sm80,sm86"`` / ``"8.6"`` / ``["SM89"]`` into ``ComputeCapability`` names (``("SM80", "SM86")``).

    Raises:
        ConfigError: An unknown target (message lists the valid ones).
    """
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    out: list[str] = []
    for raw in items:
        t = raw.strip().upper().replace("_", "")
        if not t:
            continue
        if not t.startswith("SM"):
            t = "SM" + t.replace(".", "")
        if t not in RTX_TARGETS:
            known = f"{runtime_instead(t)}. " if t in GPUS else f"unknown compute capability '{raw.strip()}': "
            raise ConfigError(f"{known}TensorRT for RTX targets {', '.join(x.lower() for x in RTX_TARGETS)}")
        if t not in out:
            out.append(t)
    if not out:
        raise ConfigError("--compute-capability needs at least one target, e.g. sm86 or sm80,sm89")
    return tuple(out)


@dataclass(frozen=True)
class BuildConfig:
    """How to build one TensorRT engine from an ONNX model.

    Attributes:
        precision: ``auto`` (default: the graph's own types, :func:`graph_precision`: a Q/DQ graph
            builds INT8, an FP16 graph FP16, an FP32 graph FP32 with TF32 off unless ``tf32``),
            ``fp32``, ``fp16``, ``int8``, ``int8+fp16`` or ``best``. The explicit ones matter where
            builder flags decide (TensorRT 10 weak typing on an FP32 graph); on TensorRT 11 and
            TensorRT for RTX (strongly typed only) FP16 needs an FP16 graph and INT8 a Q/DQ graph.
        sparsity: Set ``BuilderFlag.SPARSE_WEIGHTS`` (2:4 structured-sparse tactics may be chosen).
        shapes: Optimization profile: one :class:`Profile` per dynamic input it names (TOML tables
            ``{name, min, opt, max}`` are read as Profiles). Text (``--shapes``) is parsed once, at the
            CLI, by :func:`~trtopt.backends.tensorrt.profiles.parse_shapes`.
        default_batch: ``(min, opt, max)`` batch used for inputs whose only dynamic axis is 0 and
            that ``shapes`` does not name.
        workspace_mib: Workspace memory-pool limit in MiB (0 = TensorRT default, all device memory).
        optimization_level: Builder optimization level 0-5 (TensorRT default 3).
        timing_cache: Timing cache file to load before and save after the build ("" = none).
        version_compatible: Build a version-compatible engine (runs on newer TensorRT runtimes).
        exclude_lean_runtime: With ``version_compatible``, do not embed the lean runtime.
        hardware_compat: ``none``, ``ampere_plus`` or ``same_compute_capability`` (TensorRT 10.9+).
        dla_core: DLA core to build for (-1 = GPU). TensorRT 10.x only, with GPU fallback.
        tf32: Allow TF32 for FP32 math (off by default so an FP32 baseline really is FP32).
        profiling_verbosity: ``detailed`` (per-layer tactic/precision in the inspector) or less.
        backend: ``tensorrt`` (TensorRT 10/11; TensorRT for RTX when only that is installed) or
            ``tensorrt-rtx`` (TensorRT for RTX; builds ahead of time without a GPU).
        compute_capabilities: TensorRT-RTX target architectures (``("SM86", "SM89")``; empty =
            TensorRT-RTX's defaults, :data:`RTX_DEFAULT_TARGETS`). ``SM75`` (Turing) has no INT8
            convolution and no FP32 GEMM there (:mod:`~trtopt.backends.tensorrt.targets`).
        strict: A Conv/ConvTranspose/Gemm/MatMul that is quantized in the ONNX graph but compiles in
            float is an error (default: a warning in the build report).
    """

    precision: str = "auto"
    sparsity: bool = False
    shapes: tuple[Profile, ...] = ()
    default_batch: tuple[int, int, int] = (1, 32, 64)
    workspace_mib: int = 0
    optimization_level: int = 3
    timing_cache: str = ""
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compat: str = "none"
    dla_core: int = -1
    tf32: bool = False
    profiling_verbosity: str = "detailed"
    backend: str = "tensorrt"
    compute_capabilities: tuple[str, ...] = ()
    strict: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(f"hardware_compat must be one of {', '.join(HARDWARE_COMPAT)}, "
                              f"got '{self.hardware_compat}'")
        if self.profiling_verbosity not in PROFILING_VERBOSITY:
            raise ConfigError(f"profiling_verbosity must be one of {', '.join(PROFILING_VERBOSITY)}, "
                              f"got '{self.profiling_verbosity}'")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"optimization_level must be 0-5, got {self.optimization_level}")
        if self.workspace_mib < 0:
            raise ConfigError(f"workspace_mib must be >= 0, got {self.workspace_mib}")
        if self.dla_core < -1:
            raise ConfigError(f"dla_core must be -1 (GPU) or a DLA core index, got {self.dla_core}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ConfigError("exclude_lean_runtime requires version_compatible")
        if self.backend not in FLAVOURS:
            raise ConfigError(f"backend must be one of {', '.join(FLAVOURS)}, got '{self.backend}'")
        ccs = parse_compute_capabilities(tuple(self.compute_capabilities)) if self.compute_capabilities else ()
        object.__setattr__(self, "compute_capabilities", ccs)
        b = tuple(self.default_batch)
        if len(b) != 3 or any(int(v) <= 0 for v in b) or not b[0] <= b[1] <= b[2]:
            raise ConfigError(f"default_batch must be (min, opt, max) with 0 < min <= opt <= max, got {b}")
        # TOML gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "shapes", _profiles(self.shapes))
        object.__setattr__(self, "default_batch", tuple(int(v) for v in b))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the options (used in manifests and cache keys)."""
        d = asdict(self)
        d["shapes"] = [str(p) for p in self.shapes]  # the --shapes spelling: compact and stable in cache keys
        d["default_batch"] = list(self.default_batch)
        d["compute_capabilities"] = list(self.compute_capabilities)
        return d
