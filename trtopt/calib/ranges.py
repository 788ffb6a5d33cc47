"""Per-tensor ranges from histograms: analytic bounds, the ``auto`` method, outlier flags, provenance.

``auto`` (the default) per tensor:

1. **Analytic range** when the tensor is the output of a bounded op (Softmax, Sigmoid,
   HardSigmoid -> [0, 1]; Tanh -> [-1, 1]), possibly through ops that only move or select values
   (Reshape, Transpose, Slice, Gather, ...) or a ``Where`` selecting between it and a constant
   within the bound (``Where(IsNaN(p), 0, p)``, as exported for BERT attention): amax 1.0, no
   histogram needed. A histogram method
   can only *under*-estimate such a range (entropy puts attention probabilities at 0.03 where
   the max is 0.55).
2. Otherwise candidates ``entropy``, ``percentile`` (``config.percentile`` and 99.999), ``mse``
   and ``max`` are computed on the tensor's |x| histogram and scored by the estimated
   fake-quantization error of the tensor (:func:`quant_error`: rounding noise ``step^2/12`` of the
   in-range values, ``(|x| - amax)^2`` of the clipped ones, weighted by the histogram counts);
   the lowest score wins.
3. **Guards.** A candidate clipping more than ``CLIP_LIMIT`` (0.1 %) of the non-zero values is
   rejected: that is the collapse of entropy on SiLU/Swish outputs, whose |x| mass piles up at
   the negative dip (0.2785) and drags the threshold there while positive activations reach 4-8.
   A range *dominated by a handful of values* (at most ``HANDFUL`` values above
   ``max/16``, e.g. one 1e6 among ordinary images) is flagged; then those values are left
   out and the candidates (``max`` = the top of the remaining data) are computed on the log
   histogram, whose resolution does not depend on the outliers (the linear bins would all be
   wider than the ordinary data, and the outliers would dominate every error estimate).

Every tensor's choice is recorded (``CalibrationTable.info``): the method that won, why, and the
candidates' amax and scores. The explicit methods (``entropy``, ``percentile``, ``mse``) use the
analytic ranges too (``config.analytic``) and get the same outlier flag; ``minmax`` is the observed
maximum by definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from trtopt.calib.config import CalibrationConfig
from trtopt.calib.histogram import AbsHistogram, ChannelAbsMax
from trtopt.calib.methods import amax_entropy, amax_percentile, compute_amax
from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx.graph import source_producer

log = get_logger(__name__)

#: Output |x| bound of ops whose range is known analytically.
BOUNDED_OPS = {"Softmax": 1.0, "Sigmoid": 1.0, "HardSigmoid": 1.0, "Tanh": 1.0}
#: Largest share of the non-zero values a candidate may clip before ``auto`` rejects it.
CLIP_LIMIT = 1e-3
#: A range whose top 15/16 holds at most this many values is "dominated by a handful of values".
HANDFUL = 8
_BOUND = max(BOUNDED_OPS.values())


def analytic_ranges(model: onnx.ModelProto, targets: list[str]) -> dict[str, tuple[float, str]]:
    """``{tensor: (amax, producing op type)}`` for targets computed by a bounded op (see :data:`BOUNDED_OPS`)."""
    out = {}
    for t in targets:
        node = source_producer(model.graph, t, where_max=_BOUND)  # also Where(IsNaN(p), 0, p) after a Softmax
        if node is not None and node.op_type in BOUNDED_OPS:
            out[t] = (BOUNDED_OPS[node.op_type], node.op_type)
    return out


def quant_error(counts: np.ndarray, edges: np.ndarray, amaxes: np.ndarray, num_bits: int = 8) -> np.ndarray:
    """Estimated mean squared fake-quantization error of the histogrammed values for each candidate amax.

    Each bin is represented by its centre ``c``. In range (``c <= amax``) a value is rounded to a
    step ``s = amax / (2**(num_bits-1) - 1)``: error ``min(c^2, s^2/12)`` (uniform rounding noise,
    or the value itself when it rounds to 0; exact zeros cost nothing). Clipped (``c > amax``):
    ``(c - amax)^2``. Evaluated with prefix sums: O(bins + candidates * log bins).

    Args:
        counts: Histogram ``[n]`` (uniform or not).
        edges: Edges ``[n + 1]``.
        amaxes: Candidate amax values ``[k]``.
        num_bits: Bit width.

    Returns:
        ``[k]`` mean squared errors (in squared units of the tensor).
    """
    n = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    c = (e[:-1] + e[1:]) / 2.0
    if c.size and e[0] == 0:
        c[0] = 0.0  # bin 0 is dominated by exact zeros (ReLU), which quantize exactly
    total = max(n.sum(), 1.0)
    s0 = np.concatenate([[0.0], np.cumsum(n)])
    s1 = np.concatenate([[0.0], np.cumsum(n * c)])
    s2 = np.concatenate([[0.0], np.cumsum(n * c * c)])
    a = np.asarray(amaxes, dtype=np.float64)
    step = a / ((1 << (num_bits - 1)) - 1)
    k_in = np.searchsorted(c, a, side="right")  # bins [0, k_in) are in range
    k_small = np.minimum(np.searchsorted(c, step / np.sqrt(12.0), side="left"), k_in)
    rounding = (s2[k_small] + (s0[k_in] - s0[k_small]) * step * step / 12.0)
    clip = (s2[-1] - s2[k_in]) - 2 * a * (s1[-1] - s1[k_in]) + a * a * (s0[-1] - s0[k_in])
    return (rounding + np.maximum(clip, 0.0)) / total


def _best_quant_error_amax(counts: np.ndarray, edges: np.ndarray, num_bits: int) -> float:
    """The bin edge minimising :func:`quant_error` (all edges above the first are candidates)."""
    cands = np.asarray(edges[1:], dtype=np.float64)
    err = quant_error(counts, edges, cands, num_bits)
    return float(cands[int(np.argmin(err))])


def outlier_flag(h: AbsHistogram) -> str | None:
    """Describe a range dominated by a handful of values, else ``None``."""
    if h.amax <= 0 or h.count < 100 * HANDFUL:
        return None
    top = h.count_above(h.amax / 16)
    if top > HANDFUL:
        return None
    return (f"range dominated by {top} of {h.count} values above max/16 (max {h.amax:.4g}); "
            "check the calibration data for outliers")


def _clipped_share(counts: np.ndarray, edges: np.ndarray, amax: float, nonzero: float) -> float:
    c = (edges[:-1] + edges[1:]) / 2.0
    return float(counts[c > amax].sum()) / max(nonzero, 1.0)


def auto_amax(h: AbsHistogram, config: CalibrationConfig, flag: str | None) -> tuple[float, dict[str, Any]]:
    """The ``auto`` choice for one histogrammed tensor: ``(amax, info)`` (see the module docstring)."""
    bits = config.num_bits
    if flag:  # the handful of values above max/16 are left out; the log bins resolve the rest
        counts, edges = h.log_histogram(below=h.amax / 16)
        sources = "log histogram without the outliers"
        if counts[1:].sum() == 0:  # nothing but zeros besides the outliers: they are the data
            flag = None
    if not flag:
        counts, edges = h.used_counts, h.used_edges
        sources = "linear histogram"
    counts = np.asarray(counts, dtype=np.float64)
    nonzero = counts.sum() - (counts[0] if edges[0] == 0 else 0.0)
    cands: dict[str, float] = {}
    if not flag:
        cands["entropy"] = amax_entropy(counts, edges, num_bits=bits, start_bin=config.start_bin)
    cands[f"percentile {config.percentile:g}"] = amax_percentile(counts, edges, config.percentile)
    cands["percentile 99.999"] = amax_percentile(counts, edges, 99.999)
    cands["mse"] = _best_quant_error_amax(counts, edges, bits)
    cands["max"] = float(edges[-1]) if flag else float(h.amax)  # flagged: top of the data without the outliers
    cands = {k: float(min(max(v, 0.0), h.amax)) for k, v in cands.items()}
    errors = quant_error(counts, edges, np.array(list(cands.values())), bits)
    table: dict[str, dict[str, Any]] = {}
    ok = {}
    for (name, a), err in zip(cands.items(), errors):
        clipped = _clipped_share(counts, edges, a, nonzero)
        row: dict[str, Any] = {"amax": a, "error": float(err), "clipped": clipped}
        if a <= 0:
            row["rejected"] = "zero range"
        elif clipped > CLIP_LIMIT:
            row["rejected"] = f"clips {clipped:.2%} of the non-zero values (> {CLIP_LIMIT:.1%})"
        else:
            ok[name] = float(err)
        table[name] = row
    if not ok:  # nothing survived (tiny or degenerate data): the observed maximum never clips
        win = "max"
        reason = "no candidate passed the guards; observed max"
    else:
        win = min(ok, key=lambda k: (ok[k], -cands[k]))  # ties: the wider range
        rejected = [f"{k} ({v['rejected']})" for k, v in table.items() if "rejected" in v]
        reason = f"lowest estimated quantization MSE {ok[win]:.3g} on the {sources}"
        if rejected:
            reason += "; rejected " + ", ".join(rejected)
    return cands[win], {"method": win, "reason": reason, "candidates": table}


def tensor_ranges(model: onnx.ModelProto, targets: list[str], hists: dict[str, AbsHistogram],
                  config: CalibrationConfig) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Ranges and provenance of every target that saw data (analytic ranges need no data).

    Returns:
        ``(amax by tensor, info by tensor)``; info holds ``method``, ``reason`` and, for ``auto``,
        ``candidates``; ``flags`` lists warnings such as an outlier-dominated range.
    """
    analytic = analytic_ranges(model, targets) if config.analytic and config.method != "minmax" else {}
    amax: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in targets:
        h = hists.get(name)
        if name in analytic:
            bound, op = analytic[name]
            amax[name] = bound
            info[name] = {"method": "analytic", "reason": f"output of {op}: |x| <= {bound:g} by definition"}
            if h is not None and h.amax > bound * (1 + 1e-6):  # cannot happen for a real bounded op
                amax[name] = float(h.amax)
                info[name]["reason"] += f", but {h.amax:.4g} observed: observed max used"
            continue
        if h is None or h.counts is None:
            continue
        flag = outlier_flag(h)
        if config.method == "auto":
            a, row = auto_amax(h, config, flag)
        else:
            a = compute_amax(config.method, h.used_counts, h.used_edges, h.amax, num_bits=config.num_bits,
                             start_bin=config.start_bin, percentile=config.percentile)
            a = float(a if config.method == "minmax" else min(a, h.amax))
            row = {"method": config.method, "reason": "requested method"}
        if flag:
            row["flags"] = [flag]
        if h.nonfinite:
            row.setdefault("flags", []).append(f"{h.nonfinite} NaN/Inf values left out")
        amax[name] = float(a)
        info[name] = row
    return amax, info


def finish_ranges(model: onnx.ModelProto, targets: list[str], hists: dict[str, AbsHistogram],
                  channel: ChannelAbsMax | None, config: CalibrationConfig, seen: int
                  ) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Ranges of the collected histograms, with the NaN/Inf and outlier warnings.

    Raises:
        InputError: No tensor got a range (an empty result is never a success).
    """
    for name, h in hists.items():
        if h.nonfinite:
            log.warning("tensor '%s': %d NaN/Inf values (e.g. an attention mask's -inf) left out of its statistics",
                        name, h.nonfinite)
    for name, bad in (channel.nonfinite.items() if channel else ()):
        log.warning("tensor '%s': %d NaN/Inf values left out of its per-channel maxima", name, bad)
    amax, info = tensor_ranges(model, targets, hists, config)
    for name, row in info.items():
        for flag in row.get("flags", ()):
            if "NaN/Inf" not in flag:
                log.warning("tensor '%s': %s", name, flag)
    if not amax:
        raise InputError(f"calibration produced no ranges: none of the {len(targets)} tensors to calibrate saw "
                         f"non-zero data in {seen} samples (check the data and the model's inputs)")
    counts: dict[str, int] = {}
    for row in info.values():
        counts[row["method"]] = counts.get(row["method"], 0) + 1
    log.info("calibrated %d tensors with %s on %d samples (%s)", len(amax), config.method, seen,
             ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return amax, info


__all__ = [
    "BOUNDED_OPS",
    "CLIP_LIMIT",
    "HANDFUL",
    "analytic_ranges",
    "auto_amax",
    "finish_ranges",
    "outlier_flag",
    "quant_error",
    "tensor_ranges",
]
