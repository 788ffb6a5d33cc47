"""The fewest layers kept in float that pass a judge: one search for the fidelity guard and the budget.

1. Quantize every layer and ask the judge (a callable the caller gives: the guard checks a fidelity
   tolerance on calibration data, the accuracy budget an allowed drop on held-out data).
2. If it fails, rank the quantized layers by sensitivity (:mod:`trtopt.quant.sensitivity`: the
   ``"local"`` one-run ranking by default, or ``"model"``, one whole-model run per layer).
3. Keep the k most sensitive layers in float with the smallest k that passes: doubling, then
   bisection (O(log L) judged models; assumes more float layers never hurt, re-checked by each try).

The same model, table, config and data give the same ranking and the same float set.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from trtopt.calib.table import CalibrationTable
from trtopt.onnx.exec import predict
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.qdq import PreparedModel, QdqResult, quantize_qdq
from trtopt.quant.sensitivity import keeping, local_sensitivity, model_sensitivity, output_error, quantized_layers


@dataclass(frozen=True)
class Answer:
    """A judge's answer on one candidate model.

    Attributes:
        passed: Whether the candidate is good enough.
        score: The judge's number (higher is better; e.g. a metric, or minus the violations).
        detail: One line for progress messages.
        data: Whatever the caller wants back with the chosen model (e.g. per-output fidelity).
    """

    passed: bool
    score: float = 0.0
    detail: str = ""
    data: Any = None


#: A candidate Q/DQ model -> its verdict.
JudgeFn = Callable[[QdqResult], Answer]


@dataclass
class SearchResult:
    """Outcome of :func:`fewest_in_float`.

    Attributes:
        qdq: The chosen model (all-INT8 if it passed, else the first passing k, else the last tried).
        verdict: Its verdict.
        all_int8: The all-INT8 model's verdict.
        kept: Layers kept in float, most sensitive first.
        sensitivity: Layer -> sensitivity, most sensitive first (empty when all-INT8 passed).
        layers: Layers the all-INT8 model quantizes.
    """

    qdq: QdqResult
    verdict: Answer
    all_int8: Answer
    kept: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)


def fewest_in_float(prep: PreparedModel, table: CalibrationTable, cfg: QuantizeConfig, judge: JudgeFn,
                    inputs: Mapping[str, np.ndarray], batch_size: int, static: Collection[str] = (), *,
                    fp16_ranges: dict[str, float] | None = None, may_keep_all: bool = False,
                    say: Callable[[str], None] | None = None) -> SearchResult:
    """Quantize ``prep`` and keep the fewest most-sensitive layers in float that ``judge`` passes.

    Args:
        prep: The FP32 model, prepared once (:func:`trtopt.quant.qdq.prepare_for_qdq`).
        table: Its calibration table.
        cfg: Q/DQ options (exclusions stay; ``cfg.sensitivity`` picks the ranking).
        judge: Candidate -> :class:`Answer`.
        inputs: Samples the ranking runs on (input name -> array, samples on axis 0).
        batch_size: Samples per ONNX Runtime call (:mod:`trtopt.batching`).
        static: Inputs of ``inputs`` that are per-call constants.
        fp16_ranges: Passed to :func:`~trtopt.quant.qdq.quantize_qdq`.
        may_keep_all: Also try keeping every layer in float (the budget); else at most L - 1 (the guard).
        say: Optional progress ``callback(message)``.

    Returns:
        The result; ``result.verdict.passed`` is false when no k tried passed.
    """
    tell = say or (lambda msg: None)
    full = quantize_qdq(prep, table, cfg, fp16_ranges=fp16_ranges)
    first = judge(full)
    res = SearchResult(full, first, first)
    if first.passed:
        return res
    res.layers = quantized_layers(full.model)
    tell(f"ranking the {len(res.layers)} quantized layers by sensitivity ({cfg.sensitivity})")
    res.sensitivity = rank(prep, table, cfg, res.layers, inputs, batch_size, static)
    order = list(res.sensitivity)
    limit = len(order) if may_keep_all else len(order) - 1
    tried: dict[int, tuple[QdqResult, Answer]] = {}

    def attempt(k: int) -> bool:
        if k not in tried:
            cand = quantize_qdq(prep, table, keeping(cfg, order[:k]), fp16_ranges=fp16_ranges,
                                allow_empty=k == len(order))
            tried[k] = (cand, judge(cand))
            tell(f"{k} layer(s) kept in float -> {tried[k][1].detail}")
        return tried[k][1].passed

    hi = 1
    while hi < limit and not attempt(hi):  # doubling: the first k that passes
        hi *= 2
    hi = min(hi, limit)
    if hi < 1 or not attempt(hi):
        if tried:
            k = max(tried)
            res.qdq, res.verdict = tried[k]
            res.kept = order[:k]
        return res
    lo = hi // 2  # attempt(lo) failed (or lo == 0, the all-INT8 model)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    res.qdq, res.verdict = tried[hi]
    res.kept = order[:hi]
    return res


def rank(prep: PreparedModel, table: CalibrationTable, cfg: QuantizeConfig, layers: list[str],
         inputs: Mapping[str, np.ndarray], batch_size: int, static: Collection[str] = ()) -> dict[str, float]:
    """``layers`` by sensitivity on ``inputs``, most sensitive first, as ``cfg.sensitivity`` says.

    Both rankings run on the model quantized without ``fp16_rest`` and with float weights behind
    Q->DQ (the weight's own quantization error counts).
    """
    base = replace(cfg, fp16_rest=False, weight_storage="float")
    if cfg.sensitivity == "local":
        qdq = quantize_qdq(prep, table, base, allow_empty=True).model
        return local_sensitivity(qdq, layers, inputs, batch_size, static)
    ref = list(predict(prep.model, inputs, batch_size, static, "the FP32 model").values())
    return model_sensitivity(prep, table, base, layers, lambda one: output_error(
        list(predict(one, inputs, batch_size, static, "the model with one INT8 layer").values()), ref))
