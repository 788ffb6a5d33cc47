"""Fidelity guard: an INT8 model that breaks the network is never written silently.

Post-training INT8 of a real model can lose the task while every single layer looks fine: on
PP-OCRv4's recognizer each Conv alone costs 2-20 % of the lines read as FP32 reads them, and all
of them together a third. The guard measures what matters on the calibration data,
the same way ``trtopt bench`` judges a variant (:func:`trtopt.benchmark.fidelity.fidelity`
against :data:`~trtopt.benchmark.fidelity.DEFAULT_TOLERANCE`: cosine, per-position / top-1
agreement and worst-channel cosine of every output), and when the all-INT8 model misses it:

1. scores every quantized layer by quantizing *only that layer* and measuring the normalised
   squared output error against FP32 (the per-layer sensitivity of NNCF's accuracy-aware
   quantization and ModelOpt's auto-quantize, without the search over formats);
2. keeps the k most sensitive layers in float, with the smallest k that meets the tolerance
   (doubling, then bisection: O(log L) evaluations after the L sensitivity runs);
3. reports the kept layers (ONNX node and PyTorch module) and the fidelity before and after.

If no k < L meets the tolerance, INT8 cannot help this model within it: that is an error, not a
model with no Q/DQ. The data is the calibration data (the guard checks the quantized graph on the
inputs its ranges came from; a held-out split is better where the user has one: ``--eval`` with
``--max-accuracy-drop`` measures the task metric instead).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from trtopt.batching import rule_for_onnx
from trtopt.calib.table import CalibrationTable
from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx.exec import predict
from trtopt.onnx.graph import as_model, module_name
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.qdq import prepare_for_qdq, quantize_qdq
from trtopt.quant.repair import RepairResult, repair_qdq
from trtopt.quant.sensitivity import keeping, output_error, quantized_layers, rank_layers

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
        model: The Q/DQ model to write.
        samples: Calibration samples the fidelity was measured on.
        violations_all: Tolerance violations of the all-INT8 model (empty: nothing was kept back).
        kept_nodes: ONNX nodes kept out of INT8, most sensitive first.
        kept_modules: Their PyTorch module paths (``None`` where the name carries none).
        sensitivity: Node -> normalised output error when only that node is INT8 (measured only
            when the all-INT8 model missed the tolerance).
        fidelity: Per-output fidelity of ``model`` (see :func:`trtopt.benchmark.fidelity.fidelity`).
        repair: What ``config.repair`` changed in ``model`` (``None``: no repair asked).
    """

    model: onnx.ModelProto
    samples: int
    violations_all: list[str] = field(default_factory=list)
    kept_nodes: list[str] = field(default_factory=list)
    kept_modules: list[str | None] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    fidelity: list[dict[str, Any]] = field(default_factory=list)
    repair: RepairResult | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no model)."""
        return {"samples": self.samples, "violations_all_int8": self.violations_all, "kept_nodes": self.kept_nodes,
                "kept_modules": self.kept_modules, "sensitivity": self.sensitivity, "fidelity": self.fidelity}


def _relabel(model: onnx.ModelProto, reasons: dict[str, str]) -> None:
    """Say in the stored Q/DQ summary why the guard, not the user, kept these layers in float."""
    import json

    from trtopt.quant.summary import SUMMARY_KEY

    for p in model.metadata_props:
        if p.key == SUMMARY_KEY:
            summary = json.loads(p.value)
            kept = summary.get("kept_float", {})
            kept.update({n: r for n, r in reasons.items() if n in kept})
            p.value = json.dumps(summary)


def wilson_upper(agree_pct: float, n: int, z: float = 1.96) -> float:
    """Upper end (percent) of the Wilson score interval of an agreement rate measured on ``n`` trials.

    Source: E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
    JASA 22 (1927); the interval that stays sensible for rates near 100 % and small ``n``
    (:func:`trtopt.benchmark.stats.wilson_bounds`: never below the rate itself, exactly 100 at 100 %).
    """
    from trtopt.benchmark.stats import wilson_bounds

    level = math.erf(z / math.sqrt(2))
    return 100.0 * wilson_bounds(min(max(agree_pct / 100.0, 0.0), 1.0), n, level)[1]


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


def in_sample_target(tol):
    """The tolerance the guard aims at on calibration data: half of ``tol``'s allowed loss.

    Why: the ranges were fit to the calibration data, so the error measured there underestimates
    the error on new inputs. Measured on PP-OCRv4's detector (``bench/ppocr_int8.py`` data): aiming
    at cosine 0.99 on the calibration pages gave 0.984 on held-out pages and lost a text box;
    aiming at 0.995 gave 0.993 held out and every box.
    """
    half = {}
    for name in ("min_cosine", "min_channel_cosine"):
        v = getattr(tol, name)
        half[name] = None if v is None else 1.0 - (1.0 - v) / 2.0
    if tol.min_top1_agreement is not None:
        half["min_top1_agreement"] = 100.0 - (100.0 - tol.min_top1_agreement) / 2.0
    if tol.min_sqnr_db is not None:
        half["min_sqnr_db"] = tol.min_sqnr_db + 3.0103  # half the noise power
    if tol.max_abs_err is not None:
        half["max_abs_err"] = tol.max_abs_err / 2.0
    return replace(tol, **half)


def guard_fidelity(model: str | os.PathLike[str] | onnx.ModelProto, table: CalibrationTable,
                   inputs: Mapping[str, np.ndarray], config: QuantizeConfig | None = None, tolerance=None,
                   max_samples: int = 64, batch_size: int = 16, fp16_ranges: dict[str, float] | None = None,
                   static: Collection[str] = (), progress: Progress | None = None) -> GuardResult:
    """Quantize with Q/DQ and keep the fewest most-sensitive layers in float that meet ``tolerance``.

    Args:
        model: FP32 model (path or proto).
        table: Calibration table for it.
        inputs: Calibration inputs by name, samples on axis 0 (the first ``max_samples`` are used).
        config: Q/DQ options (its exclusions stay; with ``fp16_rest`` kept layers run in FP16).
        tolerance: A :class:`trtopt.benchmark.fidelity.Tolerance` (default: ``DEFAULT_TOLERANCE``), or output
            name -> tolerance with ``"*"`` as the default (:func:`~trtopt.benchmark.fidelity.tolerance_for`); the
            guard aims at half its allowed loss on the calibration data (:func:`in_sample_target`).
        max_samples: Samples to measure on (bounds the cost: L + O(log L) model runs on them); fewer
            when a sample is large (at most :data:`MAX_ELEMENTS` input values in all). A classifier
            needs dozens: one flipped answer in 16 samples is already 6 % of top-1 agreement.
        batch_size: Samples per ONNX Runtime call (the model's fixed batch size wins, :mod:`trtopt.batching`).
        static: Inputs of ``inputs`` that are per-call constants (not cut on axis 0; their batch axes
            hold 1 entry, broadcast to every call, or one entry per sample, sampled with the samples).
        fp16_ranges: Passed to :func:`~trtopt.quant.qdq.quantize_qdq` (the FP16 data rule of ``fp16_rest``).
        progress: Optional ``callback(message)`` for the work under way (ranking, attempts); the verdict
            is in the result, not reported here.

    Returns:
        The model and the report.

    Raises:
        InputError: No samples; data ONNX Runtime refuses (one line naming the input and the fix); or
            even the most INT8-tolerant layers alone miss the tolerance (quantizing this model to INT8
            would break it: use FP16, or set a looser tolerance).
    """
    from trtopt.benchmark.fidelity import check_tolerance_names, fidelity, tolerance_for

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
    tols = [in_sample_target(tolerance_for(tolerance, o.name)) for o in fp32.graph.output]
    ref = predict_all(fp32, feeds, batch_size, static, "the FP32 model on the calibration data")

    def judge(m: onnx.ModelProto) -> tuple[list[str], list[dict[str, Any]], list[np.ndarray]]:
        outs = predict_all(m, feeds, batch_size, static, "the INT8 model on the calibration data")
        fids = [fidelity(r, y) for r, y in zip(ref, outs)]
        return [v for r, f, t in zip(ref, fids, tols) for v in t.violations(significant(f, r.shape))], fids, outs

    prep = prepare_for_qdq(fp32)  # once: every attempt below quantizes the same prepared graph
    full = quantize_qdq(prep, table, cfg, fp16_ranges=fp16_ranges)
    # each model judged here is repaired first (measured on it: a layer kept in float changes what follows it)
    repaired = repair_qdq(full, prep.model, feeds, cfg.repair, batch_size, static) if cfg.repair else None
    bad, fids, _ = judge(full)
    result = GuardResult(full, n, violations_all=bad, fidelity=fids, repair=repaired)
    if not bad:  # the verdict is the caller's to print (GuardResult); progress only reports work under way
        return result
    layers = quantized_layers(full)
    say(f"fidelity guard: ranking the {len(layers)} quantized layers by sensitivity")
    result.sensitivity = rank_layers(
        prep, table, cfg, layers,
        lambda one: output_error(predict_all(one, feeds, batch_size, static, "the INT8 model on the calibration data"),
                                 ref),
        lambda k, name: say(f"fidelity guard: sensitivity {k}/{len(layers)}: {name}"))
    order = list(result.sensitivity)
    tried: dict[int, tuple[onnx.ModelProto, list[str], list[dict[str, Any]]]] = {}
    repairs: dict[int, RepairResult] = {}

    def attempt(k: int) -> bool:
        if k not in tried:
            m = quantize_qdq(prep, table, keeping(cfg, order[:k]), fp16_ranges=fp16_ranges)
            if cfg.repair:
                repairs[k] = repair_qdq(m, prep.model, feeds, cfg.repair, batch_size, static)
            v, f, _ = judge(m)
            tried[k] = (m, v, f)
            say(f"fidelity guard: {k} layer(s) kept in float -> {'ok' if not v else '; '.join(v[:2])}")
        return not tried[k][1]

    hi = 1
    while hi < len(order) and not attempt(hi):  # doubling: the first k that passes
        hi *= 2
    hi = min(hi, len(order) - 1)
    if hi < 1 or not attempt(hi):
        raise InputError(f"INT8 breaks this model: with {len(order) - 1} of {len(order)} layers kept in float "
                         f"it still misses the fidelity tolerance on the calibration data ({'; '.join(bad[:2])}); "
                         "use --fp16, or pass --no-fidelity-guard to write the all-INT8 model anyway")
    lo = hi // 2  # attempt(lo) failed (or lo == 0, the all-INT8 model)
    while hi - lo > 1:  # bisection; assumes more float layers never hurts (re-checked by attempt)
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    result.model, _, result.fidelity = tried[hi]
    result.repair = repairs.get(hi, result.repair)
    result.kept_nodes = order[:hi]
    _relabel(result.model, {n: f"fidelity guard (sensitivity rank {k} of {len(order)})"
                            for k, n in enumerate(result.kept_nodes, 1)})
    result.kept_modules = [module_name(n) for n in result.kept_nodes]
    log.info("fidelity guard: kept %d of %d layers in float to meet the tolerance on %d calibration samples",
                hi, len(order), n)
    return result
