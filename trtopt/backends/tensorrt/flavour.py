"""Which TensorRT is running: TensorRT 10/11 (``tensorrt``) or TensorRT for RTX (``tensorrt_rtx``).

Both share the ONNX parser and the network/builder API, so one code path builds with either; the
flavour is told by feature detection (``ComputeCapability`` exists only in TensorRT for RTX), never by
version number (RTX versions are 1.x). TensorRT for RTX compiles ahead of time for target
architectures without a GPU (NVIDIA, "CPU-Only AOT and TensorRT-RTX Engines"), so its build
environment names targets, not a local GPU, and its version is kept as a string (``1.7.1.116``), not
mangled into an ``NV_TENSORRT_VERSION`` integer.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

from trtopt.backends.tensorrt.config import RTX_DEFAULT_TARGETS, BuildConfig
from trtopt.errors import ConfigError
from trtopt.log import get_logger
from trtopt.optional import install_hint, missing_dependency

log = get_logger(__name__)

#: ``--backend`` name -> (import name, pip extra)
MODULES = {"tensorrt": ("tensorrt", "tensorrt"), "tensorrt-rtx": ("tensorrt_rtx", "tensorrt-rtx")}
#: Human names used in messages.
LABELS = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT for RTX"}


def import_tensorrt(backend: str = "tensorrt") -> Any:
    """Import the TensorRT module for ``backend``.

    ``tensorrt`` imports TensorRT 10/11 and, when only TensorRT for RTX is installed, uses that (same
    API; engines are built for RTX targets). ``tensorrt-rtx`` imports TensorRT for RTX only.

    Raises:
        MissingDependencyError: The module is missing (message names ``pip install 'trtopt[EXTRA]'``).
    """
    if backend == "tensorrt-rtx":
        try:
            import tensorrt_rtx
        except ImportError as exc:
            raise missing_dependency("tensorrt_rtx", "tensorrt-rtx",
                                     f"needed for --backend tensorrt-rtx ({exc})") from exc
        return tensorrt_rtx
    try:
        import tensorrt
    except ImportError as exc:
        try:
            import tensorrt_rtx
        except ImportError:
            raise missing_dependency("tensorrt", "tensorrt", f"needed for --backend tensorrt ({exc}); "
                                     f"or {install_hint('tensorrt-rtx')} to build for RTX GPUs") from exc
        log.info("TensorRT 10/11 is not installed; building with TensorRT for RTX %s", tensorrt_rtx.__version__)
        return tensorrt_rtx
    return tensorrt


def flavour_of(trt: Any) -> str:
    """``"tensorrt-rtx"`` when ``trt`` has ``ComputeCapability`` (TensorRT for RTX), else ``"tensorrt"``."""
    return "tensorrt-rtx" if hasattr(trt, "ComputeCapability") else "tensorrt"


def label(flavour: str, version: str | None = None) -> str:
    """``"TensorRT for RTX 1.7.1.116"`` / ``"TensorRT 10.3.0"``."""
    return f"{LABELS.get(flavour, flavour)}{' ' + version if version else ''}"


def rtx_environment(trt: Any, targets: Sequence[str], default_targets: bool) -> dict[str, Any]:
    """Build environment of a TensorRT-for-RTX build: version and targets, no GPU (none is needed).

    Args:
        trt: The imported ``tensorrt_rtx`` module.
        targets: ``ComputeCapability`` names the engine is compiled for.
        default_targets: ``targets`` are TensorRT-RTX's defaults (none was asked for).
    """
    return {"tensorrt": {"version": trt.__version__, "flavour": "tensorrt-rtx", "nv_tensorrt_version": None,
                         "module": getattr(trt, "__file__", None)},
            "gpu": {"name": None, "compute_capability": None, "targets": list(targets),
                    "default_targets": default_targets},
            "platform": {"os": platform.system(), "arch": platform.machine()}}


def rtx_plan_rules(config: BuildConfig, notes: list[str]) -> tuple[str, tuple[str, ...]]:
    """TensorRT-for-RTX limits: what it cannot do is an error, what it ignores is skipped (and noted once).

    Returns:
        ``(hardware compatibility level name, ComputeCapability names to set)``.
    """
    if config.hardware_compat != "none":
        raise ConfigError(f"hardware_compat {config.hardware_compat} is not supported by TensorRT for RTX; "
                          "choose target GPUs with --compute-capability (e.g. sm80,sm86,sm89,sm120)")
    if config.version_compatible and not config.exclude_lean_runtime:
        raise ConfigError("TensorRT for RTX builds version-compatible engines only with exclude_lean_runtime "
                          "(it ships no lean runtime library)")
    if config.timing_cache:
        notes.append("timing cache skipped: a no-op in TensorRT for RTX (kernels are chosen on the GPU)")
    if "SM75" in config.compute_capabilities:
        notes.append("SM75 (Turing) target: no INT8 convolution and no FP32 GEMM there "
                     "(FP32-typed Gemm/MatMul get FP16 as their float type; quantized ones stay INT8)")
    if not config.compute_capabilities:
        notes.append(f"TensorRT-RTX default targets ({', '.join(RTX_DEFAULT_TARGETS)})")
    return "NONE", tuple(config.compute_capabilities)


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` keeping INFO+ lines in ``.lines`` and the VERBOSE ``Layers:`` block in ``.layers``.

    The ``Layers:`` block (layer names, types, input datatypes and the ONNX nodes fused into each
    layer) is logged at VERBOSE by TensorRT for RTX when profiling verbosity is DETAILED; it is the
    only place a CPU-only build says which precision each layer compiled to. Other VERBOSE lines are
    dropped (thousands per build). Nothing is printed: failures are condensed into one error line.
    """
    class _CaptureLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []
            self.layers: str = ""

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity)).split(".")[-1]
            if name == "VERBOSE":
                if msg.startswith("Layers:"):
                    self.layers = msg
                return
            self.lines.append(f"{name}: {msg}")
            # Debug only: errors reach the user once, condensed into the BuildError's single line.
            log.debug("TensorRT %s: %s", name, msg)

    return _CaptureLogger()
