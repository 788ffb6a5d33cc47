"""amax from a histogram of |x|: entropy (TensorRT EntropyCalibrator2), percentile, mse, minmax.

The entropy search follows the publicly described TensorRT algorithm exactly as
pytorch-quantization / ModelOpt implement it (``_compute_amax_entropy``):

* ``bins[0] = bins[1]`` (the zero bin, dominated by post-ReLU zeros, is replaced);
* candidates ``i = start_bin .. len(bins)`` (inclusive);
* reference ``P = bins[:i]`` with all outlier mass ``sum(bins[i:])`` folded into bin ``i-1``;
* candidate ``Q``: the first ``i`` bins merged into ``2**(num_bits-1)`` equal buckets, each
  bucket's total spread uniformly over its *non-empty* source bins (empty bins stay 0);
* ``KL(P || Q)`` with both normalised (``scipy.stats.entropy`` semantics, no smoothing:
  P > 0 where Q == 0 gives +inf);
* the **last** minimum wins; ``amax = edges[i]``.

Instead of building P and Q for each candidate (O(bins) each, O(bins^2) in total), the KL
divergence is evaluated per *bucket* with prefix sums: inside a bucket every non-empty bin has
the same Q value (bucket total / non-empty count) and the P mass of the bucket is its total, so

    sum_j P_j log Q_j = sum_b S_b log(S_b / n_b) + outliers * log Q_{i-1}
    sum_j P_j log P_j = prefix(bins log bins)[i-1] + (bins[i-1] + outliers) log(bins[i-1] + outliers)

with bin ``j`` of candidate ``i`` in bucket ``(levels*j)//i`` (exactly what ``np.digitize`` on
``linspace(0, i, levels+1)`` returns: those edges are exact multiples of ``i/levels``). That
is O(levels) per candidate, all candidates at once. Candidates whose KL equals the minimum up
to float rounding count as ties, and the last one wins.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1024  # candidates evaluated per vectorised block (bounded temporary memory)


def amax_entropy(counts: np.ndarray, edges: np.ndarray, num_bits: int = 8, unsigned: bool = False,
                 start_bin: int = 128, stride: int = 1) -> float:
    """Entropy (KL-divergence) calibration threshold, TensorRT EntropyCalibrator2 style.

    Args:
        counts: Histogram of |x| (``n`` bins; not modified).
        edges: Bin edges (``n + 1``).
        num_bits: Target bit width (8 -> 128 levels for signed).
        unsigned: Unsigned target (256 levels for 8 bits).
        start_bin: First candidate ``i``.
        stride: Step between candidates.

    Returns:
        ``edges[i*]`` for the last ``i*`` minimising KL(P || Q).
    """
    bins = np.asarray(counts, dtype=np.float64).copy()
    n = len(bins)
    if n < 2 or bins.sum() == 0:
        return float(edges[-1])
    bins[0] = bins[1]
    levels = 1 << (num_bits - 1 + int(unsigned))
    cands = np.arange(min(start_bin, n), n + 1, stride, dtype=np.int64)
    kl = np.concatenate([_kl(bins, cands[s : s + _BLOCK], levels) for s in range(0, len(cands), _BLOCK)])
    tol = 1e-12 * max(1.0, abs(float(kl.min())))
    best = int(np.flatnonzero(kl <= kl.min() + tol)[-1])  # last minimum
    return float(edges[cands[best]])


def _kl(bins: np.ndarray, cands: np.ndarray, levels: int) -> np.ndarray:
    """KL(P||Q) of each candidate in ``cands`` (see the module docstring for the bucket form)."""
    total = bins.sum()
    csum = np.concatenate([[0.0], np.cumsum(bins)])
    cnz = np.concatenate([[0], np.cumsum(bins > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.concatenate([[0.0], np.cumsum(np.where(bins > 0, bins * np.log(bins), 0.0))])
        i = cands[:, None]
        b = np.arange(levels, dtype=np.int64)[None, :]
        lo, hi = -((-b * i) // levels), -((-(b + 1) * i) // levels)  # ceil: bucket b = bins [lo, hi)
        s_b, n_b = csum[hi] - csum[lo], cnz[hi] - cnz[lo]
        plogq = np.where(s_b > 0, s_b * np.log(s_b / np.maximum(n_b, 1)), 0.0).sum(axis=1)
        outl = total - csum[cands]
        last = bins[cands - 1]
        rows = np.arange(len(cands))
        bl = (levels * (cands - 1)) // cands  # bucket of bin i-1
        q_last = s_b[rows, bl] / np.maximum(n_b[rows, bl], 1)
        plogq = plogq + np.where(outl > 0, outl * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
        p_last = last + outl
        plogp = xlogx[cands - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        s_q = csum[cands]
        kl = plogp / total - np.log(total) - plogq / total + np.log(np.where(s_q > 0, s_q, 1.0))
    # P > 0 where Q == 0: outlier mass folded into an empty last bin, or no in-range mass at all
    return np.where(((last == 0) & (outl > 0)) | (s_q <= 0), np.inf, kl)


def amax_percentile(counts: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """Smallest bin edge whose cumulative share of |x| reaches ``percentile`` (pytorch-quantization)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float(edges[-1])
    cdf = np.cumsum(counts / total)
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(idx, len(edges) - 1)])


def downsample(counts: np.ndarray, edges: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge groups of ``k`` adjacent uniform bins so at most ``max_bins`` remain (bounds O(bins^2) searches)."""
    n = len(counts)
    if n <= max_bins:
        return counts, edges
    k = -(-n // max_bins)
    m = -(-n // k)
    padded = np.zeros(m * k, dtype=np.asarray(counts).dtype)
    padded[:n] = counts
    width = (edges[-1] - edges[0]) / n
    return padded.reshape(m, k).sum(axis=1), edges[0] + np.arange(m + 1, dtype=np.float64) * width * k


_MSE_MAX_BINS = 4096  # amax_mse is O(bins^2): a 4096-bin histogram takes ~0.1 s


def amax_mse(counts: np.ndarray, edges: np.ndarray, num_bits: int = 8, unsigned: bool = False,
             start_bin: int = 128, stride: int = 1) -> float:
    """Bin centre minimising the count-weighted fake-quantization MSE (pytorch-quantization ``mse``).

    Histograms over 4096 bins are first merged down to at most 4096 (so the O(bins^2) search is
    bounded whatever the data); ``start_bin`` is scaled accordingly.
    """
    n0 = len(counts)
    counts, edges = downsample(np.asarray(counts), np.asarray(edges, dtype=np.float64), _MSE_MAX_BINS)
    start_bin = max(1, start_bin * len(counts) // max(n0, 1))
    counts = np.asarray(counts, dtype=np.float64)
    centers = (edges[1:] + edges[:-1]) / 2.0
    if counts.sum() == 0 or len(centers) <= start_bin:
        return float(edges[-1])
    qmax = (1 << (num_bits - int(not unsigned))) - 1
    best, best_i = np.inf, len(centers) - 1
    for s in range(start_bin, len(centers), stride * _BLOCK):
        idx = np.arange(s, min(s + stride * _BLOCK, len(centers)), stride)
        amax = centers[idx][:, None]
        scale = qmax / amax
        quant = np.clip(np.round(centers[None, :] * scale), 0, qmax) / scale
        mse = (((quant - centers[None, :]) ** 2) * counts[None, :]).mean(axis=1)
        k = int(np.argmin(mse))
        if mse[k] < best:
            best, best_i = float(mse[k]), int(idx[k])
    return float(centers[best_i])


def compute_amax(method: str, counts: np.ndarray, edges: np.ndarray, exact_max: float, num_bits: int = 8,
                 start_bin: int = 128, percentile: float = 99.99) -> float:
    """Dispatch to one method; ``exact_max`` is the running max |x| (used by ``minmax``)."""
    if method == "minmax":
        return float(exact_max)
    if method == "entropy":
        return amax_entropy(counts, edges, num_bits=num_bits, start_bin=start_bin)
    if method == "percentile":
        return amax_percentile(counts, edges, percentile)
    if method == "mse":
        return amax_mse(counts, edges, num_bits=num_bits, start_bin=start_bin)
    raise ValueError(f"unknown calibration method {method!r}")
