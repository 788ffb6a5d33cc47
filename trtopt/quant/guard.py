"""Fidelity guard: an INT8 model that breaks the network is never written silently.

Post-training INT8 of a real model can lose the task while every single layer looks fine: on
PP-OCRv4's recognizer each Conv alone costs 2-20 % of the lines read as FP32 reads them, and all
of them together a third. The guard measures what matters with the judge the benchmark uses
(:class:`trtopt.judge.verdict.Judge`): each output by its kind (detections kept, map IoU, decoded
sequences, ...; outputs of no known kind by cosine, argmax agreement and worst-channel cosine against
:data:`~trtopt.judge.generic.DEFAULT_TOLERANCE`), FP32's own NaN/Inf positions excluded and the
calibration's outlier samples judged apart. It judges on held-out data where it is given
(``eval_inputs``, ``trtopt quantize --eval``) against the tolerance itself, else on the calibration
data against half the allowed loss. When the all-INT8 model misses it:

1. ranks every quantized layer by sensitivity (:mod:`trtopt.quant.sensitivity`; by default the
   error of the layer's own output under its Q/DQ inputs, all layers in one ONNX Runtime run);
2. keeps the k most sensitive layers in float, with the smallest k that meets the tolerance
   (:func:`trtopt.quant.search.fewest_in_float`, shared with the accuracy budget: doubling, then
   bisection, O(log L) judged models);
3. reports the kept layers (ONNX node and PyTorch module) and the fidelity before and after.

If no k < L meets the tolerance, INT8 cannot help this model within it: that is an error, not a
model with no Q/DQ; the error names the verdict's case.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from trtopt.batching import rule_for_onnx
from trtopt.calib.outliers import outlier_samples
from trtopt.calib.table import CalibrationTable
from trtopt.errors import InputError
from trtopt.judge.kinds import OutputKind
from trtopt.judge.recognize import recognize
from trtopt.judge.vectors import wilson_upper
from trtopt.judge.verdict import Judge, Verdict
from trtopt.log import get_logger
from trtopt.onnx.exec import predict
from trtopt.onnx.graph import as_model, module_name
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.qdq import QdqResult, prepare_for_qdq
from trtopt.quant.repair import RepairResult, repair_qdq
from trtopt.quant.search import Answer, fewest_in_float
from trtopt.quant.summary import write_summary

log = get_logger(__name__)
Progress = Callable[[str], None]
#: Input values the guard measures on at most (64 MB of float32): bounds its time and memory on large inputs.
MAX_ELEMENTS = 1 << 24
#: Below this many trials an agreement rate is judged by its Wilson upper bound (see :func:`significant`).
SMALL_SAMPLE = 1000


def predict_all(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], batch_size: int,
                static: Collection[str] = (), what: str = "the model") -> list[np.ndarray]:
    """Run ``model`` in ONNX Runtime on ``inputs`` (samples on axis 0); every float output, concatenated.

    Calls follow the one batching rule (:mod:`trtopt.batching`): ``batch_size`` samples per call, or
    the model's fixed batch size; ``static`` inputs (per-call constants, docs/data-format.md) go
    with every call, their batch axes broadcast from size 1 or cut with the samples.

    Raises:
        InputError: ONNX Runtime refused the inputs (one line naming the input and the fix).
    """
    outs = predict(model, inputs, batch_size, static, what)
    return [v.astype(np.float32) for v in outs.values() if np.issubdtype(v.dtype, np.floating)]


@dataclass
class GuardResult:
    """Outcome of :func:`guard_fidelity`.

    Attributes:
        qdq: The Q/DQ model to write and its summary (``.model`` is the model).
        samples: Calibration samples the fidelity was measured on.
        violations_all: Tolerance violations of the all-INT8 model (empty: nothing was kept back).
        kept_nodes: ONNX nodes kept out of INT8, most sensitive first.
        kept_modules: Their PyTorch module paths (``None`` where the name carries none).
        sensitivity: Node -> normalised output error when only that node is INT8 (measured only
            when the all-INT8 model missed the tolerance).
        fidelity: Per-output fidelity of ``model`` (see :func:`trtopt.judge.generic.fidelity`).
        verdict_all: The judge's verdict on the all-INT8 model (kinds, task metrics, the case).
        verdict: The judge's verdict on ``model``.
        held_out: Samples judged on data the calibration did not see (``--eval``); 0 = calibration data.
        repair: What ``config.repair`` changed in ``model`` (``None``: no repair asked).
    """

    qdq: QdqResult
    samples: int
    violations_all: list[str] = field(default_factory=list)
    kept_nodes: list[str] = field(default_factory=list)
    kept_modules: list[str | None] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    fidelity: list[dict[str, Any]] = field(default_factory=list)
    verdict_all: Verdict | None = None
    verdict: Verdict | None = None
    held_out: int = 0
    repair: RepairResult | None = None

    @property
    def model(self) -> onnx.ModelProto:
        """The Q/DQ model to write."""
        return self.qdq.model

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no model)."""
        return {"samples": self.samples, "violations_all_int8": self.violations_all, "kept_nodes": self.kept_nodes,
                "kept_modules": self.kept_modules, "sensitivity": self.sensitivity, "fidelity": self.fidelity,
                "held_out_samples": self.held_out,
                "verdict_all_int8": None if self.verdict_all is None else self.verdict_all.to_dict(),
                "verdict": None if self.verdict is None else self.verdict.to_dict()}


def _relabel(qdq: QdqResult, reasons: dict[str, str]) -> QdqResult:
    """``qdq`` whose summary says why the guard, not the user, kept these layers in float.

    The model's metadata entry is rewritten to match (provenance of the saved file).
    """
    summary = qdq.summary.relabeled(reasons)
    write_summary(qdq.model, summary)
    return replace(qdq, summary=summary)



def significant(fid: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """``fid`` with a per-sample agreement rate replaced by its Wilson upper bound when the sample is small.

    Why: on a few dozen calibration samples one flipped near-tie answer is already 1.6 %, coarser
    than the 1 % the tolerance allows, so the guard acts only on a loss it can tell from noise.
    Per-position agreement of sequence outputs is measured on samples x positions (thousands of
    trials on a few dozen lines): its point estimate resolves 1 %, and is used as it is.
    """
    out = dict(fid)
    if out.get("top1_agreement") is not None and shape[0] < SMALL_SAMPLE:
        out["top1_agreement"] = wilson_upper(out["top1_agreement"], shape[0])
    return out




def guard_fidelity(model: str | os.PathLike[str] | onnx.ModelProto, table: CalibrationTable,
                   inputs: Mapping[str, np.ndarray], config: QuantizeConfig | None = None, tolerance=None,
                   max_samples: int = 64, batch_size: int = 16, fp16_ranges: dict[str, float] | None = None,
                   static: Collection[str] = (), progress: Progress | None = None,
                   kinds: Mapping[str, OutputKind] | None = None,
                   eval_inputs: Mapping[str, np.ndarray] | None = None) -> GuardResult:
    """Quantize with Q/DQ and keep the fewest most-sensitive layers in float that meet ``tolerance``.

    Args:
        model: FP32 model (path or proto).
        table: Calibration table for it.
        inputs: Calibration inputs by name, samples on axis 0 (the first ``max_samples`` are used).
        config: Q/DQ options (its exclusions stay; with ``fp16_rest`` kept layers run in FP16).
        tolerance: A :class:`trtopt.judge.generic.Tolerance` (default: ``DEFAULT_TOLERANCE``), or output
            name -> tolerance with ``"*"`` as the default (:func:`~trtopt.judge.generic.tolerance_for`); the
            guard aims at half its allowed loss on the calibration data (:func:`~trtopt.judge.verdict.half_loss`).
        max_samples: Samples to measure on (bounds the cost: O(log L) model runs on them); fewer
            when a sample is large (at most :data:`MAX_ELEMENTS` input values in all). A classifier
            needs dozens: one flipped answer in 16 samples is already 6 % of top-1 agreement.
        batch_size: Samples per ONNX Runtime call (the model's fixed batch size wins, :mod:`trtopt.batching`).
        static: Inputs of ``inputs`` that are per-call constants (not cut on axis 0; their batch axes
            hold 1 entry, broadcast to every call, or one entry per sample, sampled with the samples).
        fp16_ranges: Passed to :func:`~trtopt.quant.qdq.quantize_qdq` (the FP16 data rule of ``fp16_rest``).
        progress: Optional ``callback(message)`` for the work under way (ranking, attempts); the verdict
            is in the result, not reported here.
        kinds: Declared output kinds (:func:`trtopt.judge.kinds.parse_declarations`); the others are
            recognized from their shapes and the graph (:func:`trtopt.judge.kinds.recognize`).
        eval_inputs: Held-out inputs (same names; the calibration never saw them): the judge measures
            on them against the tolerance itself; without them it measures on the calibration samples
            against half the allowed loss. Sensitivity ranking always uses the calibration samples.

    Returns:
        The model and the report.

    Raises:
        InputError: No samples; data ONNX Runtime refuses (one line naming the input and the fix); or
            even the most INT8-tolerant layers alone miss the tolerance (quantizing this model to INT8
            would break it: use FP16, or set a looser tolerance).
    """
    from trtopt.judge.generic import check_tolerance_names

    cfg = config or QuantizeConfig()
    say = progress or (lambda msg: None)
    fp32 = as_model(model)
    rule = rule_for_onnx(fp32, static)
    batched = {k: np.asarray(v) for k, v in inputs.items() if k not in static}
    if not batched or next(iter(batched.values())).shape[0] == 0:
        raise InputError("the fidelity guard needs calibration samples (none given)")
    per_sample = max(1, sum(int(np.prod(v.shape[1:])) for v in batched.values()))
    take = max(1, min(max_samples, MAX_ELEMENTS // per_sample))
    total = rule.samples(inputs)
    # a seeded spread over the whole file, not its first rows (files are often sorted by class): the CLI
    # and the recipe pipeline, given the same data, judge the same samples and keep the same layers
    idx = np.sort(np.random.default_rng(0).permutation(total)[:take]) if take < total else np.arange(total)
    feeds = rule.take(inputs, idx)
    n = len(idx)
    check_tolerance_names(tolerance, [o.name for o in fp32.graph.output])
    judge_on, where = _judged_data(eval_inputs, static, rule, take, feeds)
    judged = {k: v for k, v in predict(fp32, judge_on, batch_size, static, f"the FP32 model on {where}").items()
              if np.issubdtype(v.dtype, np.floating)}
    names, jref = list(judged), [v.astype(np.float32) for v in judged.values()]
    the_judge = Judge(recognize(fp32, {k: v.shape for k, v in judged.items()}, kinds), tolerance,
                      in_sample=eval_inputs is None, outliers=tuple(outlier_samples(table, judge_on, static)))

    def judge(cand: QdqResult) -> Answer:
        # each model judged is repaired first, measured on itself: a layer kept in float changes what follows it
        rep = repair_qdq(cand.model, prep.model, feeds, cfg.repair, batch_size, static) if cfg.repair else None
        outs = predict_all(cand.model, judge_on, batch_size, static, f"the INT8 model on {where}")
        verdict = the_judge(names, jref, outs)
        bad = verdict.violations
        return Answer(not bad, -float(len(bad)), "ok" if not bad else "; ".join(bad[:2]), (verdict, rep))

    prep = prepare_for_qdq(fp32)  # once: every attempt below quantizes the same prepared graph
    found = fewest_in_float(prep, table, cfg, judge, feeds, batch_size, static, fp16_ranges=fp16_ranges,
                            say=lambda msg: say(f"fidelity guard: {msg}"))
    first: Verdict = found.all_int8.data[0]
    bad = first.violations
    chosen, repaired = found.verdict.data
    result = GuardResult(found.qdq, n, violations_all=bad, fidelity=[o.generic for o in chosen.outputs],
                         sensitivity=found.sensitivity, verdict_all=first, verdict=chosen,
                         held_out=0 if eval_inputs is None else len(jref[0]) if jref else 0, repair=repaired)
    if not bad:  # the verdict is the caller's to print (GuardResult); progress only reports work under way
        return result
    if not found.verdict.passed:
        L = len(found.layers)
        raise InputError(f"INT8 breaks this model: with {L - 1} of {L} layers kept in float "
                         f"it still misses the fidelity tolerance on {where} ({'; '.join(bad[:2])}; "
                         f"{first.explain()}); "
                         "use --fp16, or pass --no-fidelity-guard to write the all-INT8 model anyway")
    result.kept_nodes = found.kept
    result.qdq = _relabel(found.qdq, {n: f"fidelity guard (sensitivity rank {k} of {len(found.layers)})"
                                      for k, n in enumerate(found.kept, 1)})
    result.kept_modules = [module_name(n) for n in result.kept_nodes]
    log.info("fidelity guard: kept %d of %d layers in float to meet the tolerance on %d calibration samples",
             len(found.kept), len(found.layers), n)
    return result


def _judged_data(eval_inputs: Mapping[str, np.ndarray] | None, static: Collection[str], rule, take: int,
                 feeds: Mapping[str, np.ndarray]) -> tuple[Mapping[str, np.ndarray], str]:
    """The inputs the judge measures on and how to name them: held-out data (a seeded subset), else ``feeds``."""
    if eval_inputs is None:
        return feeds, "the calibration data"
    total = rule.samples(eval_inputs)
    if total == 0:
        raise InputError("the held-out data for the fidelity guard has no samples")
    idx = np.sort(np.random.default_rng(0).permutation(total)[:take]) if take < total else np.arange(total)
    return rule.take(eval_inputs, idx), "the held-out data"
