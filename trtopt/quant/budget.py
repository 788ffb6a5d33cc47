"""Accuracy budget: keep the most quantization-sensitive layers out of INT8 until the drop fits.

1. Measure FP32 and all-INT8 quality on a held-out split (top-1 accuracy in percent when labels
   are given, else 100 x mean cosine similarity of the outputs to FP32).
2. If the drop exceeds the budget, rank the quantized layers by sensitivity on the split
   (:mod:`trtopt.quant.sensitivity`: continuous errors, so no ties from a small eval set).
3. Keep the fewest most sensitive layers out of INT8 that bring the drop within the budget
   (:func:`trtopt.quant.search.fewest_in_float`, the search the fidelity guard uses: doubling,
   then bisection). Kept layers stay FP32, or FP16 with ``fp16_rest`` (the rest of the graph's precision).

Reports ONNX node names and the PyTorch module paths encoded in them (``/layer1/layer1.0/conv1/Conv``
-> ``layer1.0.conv1``) -- NNCF's accuracy-aware quantization, for TensorRT's Q/DQ graphs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from trtopt.batching import rule_for_onnx
from trtopt.calib.table import CalibrationTable
from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger
from trtopt.onnx.exec import predict
from trtopt.onnx.graph import as_model, module_name
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.qdq import QdqResult, prepare_for_qdq
from trtopt.quant.search import Answer, fewest_in_float

log = get_logger(__name__)
Progress = Callable[[str, str], None]


@dataclass
class BudgetResult:
    """Outcome of :func:`apply_accuracy_budget`.

    Attributes:
        qdq: The final Q/DQ model and its summary (``.model`` is the model).
        metric: ``top1`` (percent) or ``cosine`` (100 x mean cosine to FP32).
        fp32: FP32 metric.
        int8_all: Metric with every layer quantized.
        final: Metric of ``model``.
        max_drop: The budget (points).
        kept_nodes: ONNX nodes kept out of INT8, worst first.
        kept_modules: Their PyTorch module paths (``None`` where unknown).
        sensitivity: Node -> normalised output error when only that node is INT8.
        within_budget: ``fp32 - final <= max_drop``.
    """

    qdq: QdqResult
    metric: str
    fp32: float
    int8_all: float
    final: float
    max_drop: float
    kept_nodes: list[str] = field(default_factory=list)
    kept_modules: list[str | None] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> onnx.ModelProto:
        """The final Q/DQ model."""
        return self.qdq.model

    @property
    def within_budget(self) -> bool:
        """Whether the final drop fits the budget."""
        return self.fp32 - self.final <= self.max_drop + 1e-9

    def summary(self) -> dict:
        """JSON-friendly summary (no model)."""
        return {"metric": self.metric, "fp32": self.fp32, "int8_all": self.int8_all, "final": self.final,
                "max_drop": self.max_drop, "within_budget": self.within_budget, "kept_nodes": self.kept_nodes,
                "kept_modules": self.kept_modules, "sensitivity": self.sensitivity}


def _predict(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], batch_size: int,
             static: Collection[str] = ()) -> np.ndarray:
    """The first output on every sample, ``(N, -1)`` float32; calls follow :mod:`trtopt.batching`."""
    name = model.graph.output[0].name
    out = predict(model, inputs, batch_size, static, "the model on the evaluation data", outputs=[name])[name]
    return out.astype(np.float32).reshape(rule_for_onnx(model, static).samples(inputs), -1)


def _metric(y: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> float:
    if labels is not None:
        return float((y.argmax(1) == labels).mean() * 100.0)
    cos = (y * ref).sum(1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
    return float(cos.mean() * 100.0)


def apply_accuracy_budget(model: str | os.PathLike[str] | onnx.ModelProto, table: CalibrationTable,
                          eval_inputs: Mapping[str, np.ndarray], labels: np.ndarray | None, max_drop: float,
                          config: QuantizeConfig | None = None, batch_size: int = 256,
                          progress: Progress | None = None, static: Collection[str] = ()) -> BudgetResult:
    """Quantize with Q/DQ, keeping the most sensitive layers in higher precision to meet ``max_drop``.

    Args:
        model: FP32 model.
        table: Calibration table.
        eval_inputs: Held-out inputs ``{name: array}`` (samples on axis 0).
        labels: Integer class labels for top-1, or ``None`` to use cosine similarity to FP32.
        max_drop: Allowed drop in points (top-1 percent, or 100 x (1 - cosine)).
        config: Q/DQ options (its exclusions are kept; ``fp16_rest`` keeps excluded layers FP16).
        batch_size: Samples per ONNX Runtime call (the model's fixed batch size wins, :mod:`trtopt.batching`).
        progress: Optional ``callback(stage, detail)``.
        static: Inputs of ``eval_inputs`` that are per-call constants (``static:<name>`` in the ``.npz``):
            passed with every call, not cut into samples.

    Returns:
        The final model and the report.

    Raises:
        ConfigError: A negative ``max_drop``.
        InputError: An empty split, labels that do not match it, or data ONNX Runtime refuses (one line).
    """
    if max_drop < 0:
        raise ConfigError(f"--max-accuracy-drop must be >= 0, got {max_drop}")
    if not any(k not in static for k in eval_inputs) or \
            next(v for k, v in eval_inputs.items() if k not in static).shape[0] == 0:
        raise InputError("the evaluation split is empty")
    cfg = config or QuantizeConfig()
    fp32_model = as_model(model)
    say = progress or (lambda stage, detail: None)
    ref = _predict(fp32_model, eval_inputs, batch_size, static)
    if labels is not None and len(labels) != ref.shape[0]:
        raise InputError(f"eval labels hold {len(labels)} entries for {ref.shape[0]} samples")
    metric = "top1" if labels is not None else "cosine"
    fp32 = _metric(ref, ref, labels)
    prep = prepare_for_qdq(fp32_model)  # once: every candidate below quantizes the same prepared graph

    def judge(cand: QdqResult) -> Answer:
        score = _metric(_predict(cand.model, eval_inputs, batch_size, static), ref, labels)
        return Answer(fp32 - score <= max_drop + 1e-9, score, f"{metric} {score:.3f}")

    found = fewest_in_float(prep, table, cfg, judge, eval_inputs, batch_size, static, may_keep_all=True,
                            say=lambda msg: say("budget", msg))
    int8_all = found.all_int8.score
    say("budget", f"FP32 {metric} {fp32:.3f}, all-INT8 {int8_all:.3f} (budget {max_drop} points)")
    result = BudgetResult(found.qdq, metric, fp32, int8_all, found.verdict.score, max_drop,
                          kept_nodes=found.kept, sensitivity=found.sensitivity)
    result.kept_modules = [module_name(n) for n in result.kept_nodes]
    if not result.within_budget:
        log.warning("accuracy budget not met even with every layer kept out of INT8")
    return result
