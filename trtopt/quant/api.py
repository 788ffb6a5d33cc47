"""One entry point for every quantization mode: INT8 (Q/DQ), INT8 + FP16, FP16.

``trtopt quantize`` and the recipe pipeline both call :func:`quantize`, so the same model, table,
config and data give the same model whoever asks. The mode is the config's type
(:class:`~trtopt.quant.config.QuantizeConfig` or :class:`~trtopt.quant.config.FP16Config`); the
result is a typed :class:`QuantizeResult`, built from the steps' typed results (the metadata
entries the steps write stay in the model as provenance for readers of the saved file).

Example::

    from trtopt.quant import QuantizeConfig, quantize
    from trtopt.quant.api import CalibData
    res = quantize("model.onnx", table, QuantizeConfig(fp16_rest=True), CalibData(feeds))
    res.model, res.summary.kept_float, res.guard.kept_nodes
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from trtopt.calib.collect import calibrate
from trtopt.calib.config import CalibrationConfig
from trtopt.calib.source import NumpySource
from trtopt.calib.table import CalibrationTable
from trtopt.errors import ConfigError
from trtopt.macshare import model_mac_share
from trtopt.onnx.macs import MacShare
from trtopt.quant.budget import BudgetResult, apply_accuracy_budget
from trtopt.quant.config import FP16Config, QuantizeConfig
from trtopt.quant.fp16 import FP16Result, convert_fp16
from trtopt.quant.guard import GuardResult, guard_fidelity
from trtopt.quant.qdq import QdqResult, prepare_for_qdq, quantize_qdq
from trtopt.quant.repair import RepairResult, repair_qdq
from trtopt.quant.summary import QdqSummary

#: Samples per calibration batch for the FP16 ranges and the overflow preview (the first batch).
BATCH_SIZE = 32


@dataclass(frozen=True)
class CalibData:
    """Calibration samples: the FP16 ranges, the FP16 overflow preview and the INT8 fidelity guard.

    Attributes:
        inputs: Input name -> array, samples on axis 0; the arrays named in ``static`` go whole.
        static: Inputs that are per-call constants (passed unchanged with every call).
        seed: Seed of the sample order (the preview runs on the first :data:`BATCH_SIZE` of it).
    """

    inputs: Mapping[str, np.ndarray]
    static: tuple[str, ...] = ()
    seed: int | None = 0

    def source(self) -> NumpySource:
        """The samples as seeded batches of :data:`BATCH_SIZE`."""
        batched = {k: v for k, v in self.inputs.items() if k not in self.static}
        fixed = {k: v for k, v in self.inputs.items() if k in self.static}
        return NumpySource(batched, batch_size=BATCH_SIZE, seed=self.seed, static=fixed)


@dataclass(frozen=True)
class Budget:
    """An accuracy budget: keep the most sensitive layers out of INT8 until the drop fits.

    Attributes:
        max_drop: Allowed drop in points (top-1 percent with labels, else 100 x (1 - cosine)).
        inputs: Held-out inputs by name, samples on axis 0.
        labels: Integer class labels, or ``None`` (cosine similarity to FP32).
        static: Inputs of ``inputs`` that are per-call constants.
    """

    max_drop: float
    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    static: tuple[str, ...] = ()


@dataclass
class QuantizeResult:
    """The outcome of :func:`quantize`.

    Attributes:
        model: The quantized (or FP16) model.
        summary: The Q/DQ summary (``None`` for FP16).
        guard: What the fidelity guard did (``None`` when it did not run).
        budget: The accuracy-budget report (``None`` without a budget).
        fp16_reasons: Node -> why it stays FP32 (FP16 mode, and the rest of ``fp16_rest``).
        fp16_checked: Whether calibration data drove the FP16 data rule and overflow preview.
        mac_share: INT8 share of the weighted ops' MACs (INT8 mode; at one sample of the calibration
            data, else the graph's opt shapes: :func:`trtopt.macshare.model_mac_share`).
        fp16_preview: The FP16 overflow preview's outcome (``"<n> samples, no overflow"``; FP16 mode with data).
        repair: What ``config.repair`` changed (``None`` when no repair ran).
    """

    model: onnx.ModelProto
    summary: QdqSummary | None = None
    guard: GuardResult | None = None
    budget: BudgetResult | None = None
    fp16_reasons: dict[str, str] = field(default_factory=dict)
    fp16_checked: bool = False
    mac_share: MacShare | None = None
    fp16_preview: str | None = None
    repair: RepairResult | None = None


def _with_share(res: QuantizeResult, data: CalibData | None) -> QuantizeResult:
    res.mac_share = model_mac_share(res.model, feeds=data.inputs if data else None,
                                    static=data.static if data else ())
    return res


def fp16_ranges(model: str | os.PathLike[str] | onnx.ModelProto, data: CalibData) -> dict[str, float]:
    """``{tensor: max|x|}`` of every float tensor over ``data`` (a min/max calibration of all tensors)."""
    return dict(calibrate(model, data.source(), CalibrationConfig(method="minmax", scope="all")).amax)


def _fp16(model, config: FP16Config, data: CalibData | None) -> QuantizeResult:
    if data is None:
        return _fp16_result(convert_fp16(model, config), checked=False)
    src = data.source()
    first = next(iter(src), None)
    preview = None if first is None else {**first, **src.static_inputs}
    out = convert_fp16(model, config, ranges=fp16_ranges(model, data), preview=preview, static=data.static)
    return _fp16_result(out, checked=True)


def _fp16_result(res: FP16Result, checked: bool) -> QuantizeResult:
    return QuantizeResult(model=res.model, fp16_reasons=dict(res.fp32_reasons), fp16_checked=checked,
                          fp16_preview=res.overflow_preview)


def _result(res: QdqResult, checked: bool, **kw) -> QuantizeResult:
    return QuantizeResult(model=res.model, summary=res.summary, fp16_reasons=dict(res.fp16_reasons),
                          fp16_checked=checked, **kw)


def quantize(model: str | os.PathLike[str] | onnx.ModelProto, table: CalibrationTable | None,
             config: QuantizeConfig | FP16Config, data: CalibData | None = None, *, budget: Budget | None = None,
             tolerance=None, progress: Callable[[str], None] | None = None, kinds=None,
             eval_inputs: Mapping[str, np.ndarray] | None = None) -> QuantizeResult:
    """Quantize ``model`` as ``config`` says: INT8 Q/DQ (``QuantizeConfig``) or FP16 (``FP16Config``).

    INT8: with ``budget``, :func:`~trtopt.quant.budget.apply_accuracy_budget` on its data; else, with
    ``data`` and ``config.fidelity_guard``, :func:`~trtopt.quant.guard.guard_fidelity` on ``data``
    (against ``tolerance``); else :func:`~trtopt.quant.qdq.quantize_qdq`. With ``data``, the repairs
    of ``config.repair`` (:mod:`trtopt.quant.repair`) are applied before the guard judges the model
    (the accuracy budget does not apply them). With ``fp16_rest`` and
    ``data``, the FP16 data rule uses the ranges of every float tensor measured on ``data``
    (:func:`fp16_ranges`), not the table's ranges of quantizable tensors only.
    FP16: :func:`~trtopt.quant.fp16.convert_fp16` with ranges and the overflow preview from ``data``.

    Args:
        model: FP32 ``.onnx`` path or ModelProto (not modified).
        table: Calibration table (INT8; ``None`` for FP16).
        config: The mode and its options.
        data: Calibration samples (optional).
        budget: An accuracy budget (INT8 only).
        tolerance: The guard's fidelity tolerance (default: the benchmark's default tolerance).
        progress: Optional ``callback(message)`` while the guard or budget works.
        kinds: The guard's declared output kinds (name -> :class:`trtopt.judge.kinds.OutputKind`).
        eval_inputs: Held-out inputs the guard judges on (:func:`~trtopt.quant.guard.guard_fidelity`).

    Returns:
        The model with its typed report.

    Raises:
        ConfigError: A table with FP16, none with INT8, or a budget with FP16.
        InputError / IncompatibleArtifactError: As the step raises (see each step).
    """
    say = progress or (lambda msg: None)
    if isinstance(config, FP16Config):
        if table is not None or budget is not None:
            raise ConfigError("FP16 conversion takes no calibration table and no accuracy budget")
        return _fp16(model, config, data)
    if table is None:
        raise ConfigError("INT8 quantization needs a calibration table")
    if budget is not None:
        res = apply_accuracy_budget(model, table, budget.inputs, budget.labels, budget.max_drop, config,
                                    progress=lambda stage, detail: say(f"{stage}: {detail}"), static=budget.static)
        return _with_share(_result(res.qdq, checked=False, budget=res),
                           data or CalibData(budget.inputs, budget.static))
    ranges = fp16_ranges(model, data) if data is not None and config.fp16_rest else None
    if data is not None and config.fidelity_guard:
        res = guard_fidelity(model, table, data.inputs, config, tolerance=tolerance, fp16_ranges=ranges,
                             static=data.static, progress=say, kinds=kinds, eval_inputs=eval_inputs)
        return _with_share(_result(res.qdq, checked=ranges is not None, guard=res, repair=res.repair), data)
    if data is None or not config.repair:
        return _with_share(_result(quantize_qdq(model, table, config, fp16_ranges=ranges),
                                   checked=ranges is not None), data)
    prep = prepare_for_qdq(model)
    out = quantize_qdq(prep, table, config, fp16_ranges=ranges)
    rep = repair_qdq(out.model, prep.model, data.inputs, config.repair, static=data.static)
    return _with_share(_result(out, checked=ranges is not None, repair=rep), data)
