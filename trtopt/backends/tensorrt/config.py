"""Build options of the TensorRT backend (one frozen, TOML-friendly dataclass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trtopt.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8", "int8+fp16", "best")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
PROFILING_VERBOSITY = ("detailed", "layer_names_only", "none")


@dataclass(frozen=True)
class BuildConfig:
    """How to build one TensorRT engine from an ONNX model.

    Attributes:
        precision: ``fp32`` (TF32 off unless ``tf32``), ``fp16``, ``int8``, ``int8+fp16`` or ``best``.
            On TensorRT 11 (strongly typed only) the graph's own types decide: FP16 needs an FP16
            graph and INT8 a Q/DQ graph (``trtopt quantize``).
        sparsity: Set ``BuilderFlag.SPARSE_WEIGHTS`` (2:4 structured-sparse tactics may be chosen).
        shapes: Optimization profile, one ``"input:MIN,OPT,MAX"`` (shapes as ``1x3x224x224``) or
            ``"input:SHAPE"`` (static) entry per dynamic input.
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
    """

    precision: str = "fp32"
    sparsity: bool = False
    shapes: tuple[str, ...] = ()
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
        b = tuple(self.default_batch)
        if len(b) != 3 or any(int(v) <= 0 for v in b) or not b[0] <= b[1] <= b[2]:
            raise ConfigError(f"default_batch must be (min, opt, max) with 0 < min <= opt <= max, got {b}")
        # TOML gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "default_batch", tuple(int(v) for v in b))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the options (used in manifests and cache keys)."""
        d = asdict(self)
        d["shapes"] = list(self.shapes)
        d["default_batch"] = list(self.default_batch)
        return d
