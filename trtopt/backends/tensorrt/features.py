"""Which TensorRT this is: features detected by attribute name, never by version number.

TensorRT 11 removed weak typing (``BuilderFlag.FP16/INT8``, the INT8 calibrators); every network is
strongly typed there, so the ONNX graph's own types decide precision. TensorRT 10 has both. TensorRT
for RTX builds ahead of time for target architectures without a GPU. :func:`detect_features` reads
all three from a name predicate, so the same code answers for the imported module and for a
bindings wheel that is only read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from trtopt.errors import ConfigError


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


#: The names whose presence means weak typing (all of them: a partial set is not usable).
WEAK_TYPING_NAMES = ("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2",
                     "IBuilderConfig.int8_calibrator")


def detect_features(has: Callable[[str], bool]) -> Features:
    """Detect features from a name predicate (``has("BuilderFlag.INT8")``).

    Args:
        has: Whether ``trt.<dotted name>`` exists; :func:`has_attr_chain` for the imported module,
            or ``BindingsAPI.has`` (``tools/trt_apicheck.py``) for a bindings wheel read without
            importing it.

    Returns:
        The feature set.
    """
    return Features(weak_typing=all(has(n) for n in WEAK_TYPING_NAMES),
                    same_compute_capability=has("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"),
                    rtx=has("ComputeCapability"))


def has_attr_chain(obj: object, dotted: str) -> bool:
    """Whether ``obj.<dotted>`` resolves (``hasattr`` along the chain).

    Args:
        obj: Usually the imported ``tensorrt`` module.
        dotted: ``"BuilderFlag.INT8"``, ``"IBuilderConfig.set_flag"``, ...
    """
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def tensorrt_features(trt: object) -> Features:
    """:func:`detect_features` of an imported ``tensorrt`` / ``tensorrt_rtx`` module."""
    return detect_features(lambda dotted: has_attr_chain(trt, dotted))


def nv_tensorrt_version(version: str) -> int:
    """``NV_TENSORRT_VERSION`` for a ``tensorrt.__version__`` string (``"10.3.0.26"`` -> 100300).

    Args:
        version: ``major.minor.patch[.build]``.

    Raises:
        ConfigError: Not a TensorRT version string.
    """
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ConfigError(f"not a TensorRT version: '{version}'")
    major, minor, patch = (int(g) for g in m.groups())
    # 8.x headers use major*1000 (+minor*100+patch); 10.x and later use major*10000.
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch
