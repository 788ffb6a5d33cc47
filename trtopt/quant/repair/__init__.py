"""INT8 repair: make the Q/DQ model closer to FP32 before any layer falls back to float.

The repairs keep TensorRT's Q/DQ layout (per-channel symmetric INT8 weights, per-tensor symmetric
activations) and change only float parameters around it:

* ``bias``: per-channel bias correction (:mod:`trtopt.quant.repair.bias`; Nagel et al. 2019).

:func:`repair_qdq` runs the repairs a :class:`~trtopt.quant.config.QuantizeConfig` names on a model
from :func:`~trtopt.quant.qdq.quantize_qdq`; the fidelity guard repairs every model it judges (the
all-INT8 one and each attempt with layers kept in float) and keeps in float only what still fails.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from trtopt.onnx.rewrite import drop_unused
from trtopt.quant.repair.bias import BiasCorrection, correct_biases

#: Repair names accepted by ``QuantizeConfig.repair`` / ``trtopt quantize --repair``.
REPAIRS = ("bias",)


@dataclass(frozen=True)
class RepairResult:
    """What the repairs changed.

    Attributes:
        bias: The bias correction's per-layer changes (``None`` when it did not run).
    """

    bias: BiasCorrection | None = None

    def summary(self) -> dict[str, object]:
        """JSON-friendly counts per repair."""
        out: dict[str, object] = {}
        if self.bias is not None:
            out["bias"] = {"corrected_layers": len(self.bias.corrected), "skipped": self.bias.skipped,
                           "steps": self.bias.steps}
        return out


def repair_qdq(qdq: onnx.ModelProto, fp32: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
               repairs: Collection[str], batch_size: int = 16, static: Collection[str] = ()) -> RepairResult:
    """Apply ``repairs`` (names of :data:`REPAIRS`) to ``qdq`` in place, measured on ``inputs``.

    Args:
        qdq: A model from :func:`~trtopt.quant.qdq.quantize_qdq` (modified in place).
        fp32: The prepared FP32 graph it was made from (:attr:`~trtopt.quant.qdq.PreparedModel.model`).
        inputs: Calibration inputs by name, samples on axis 0.
        repairs: Which repairs to run.
        batch_size: Samples per ONNX Runtime call.
        static: Inputs that are per-call constants.

    Raises:
        InputError: ONNX Runtime refused a model or the inputs.
    """
    bias = None
    if "bias" in repairs:
        bias = correct_biases(qdq, fp32, inputs, batch_size=batch_size, static=static)
        drop_unused(qdq.graph)
    return RepairResult(bias=bias)

