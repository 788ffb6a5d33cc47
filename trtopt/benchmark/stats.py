"""Confidence intervals for what a benchmark report shows (numpy and the standard library only).

Throughput. A variant is timed in many short rounds interleaved with the other
variants of its comparison, so each round yields one throughput per variant and the rounds of
two variants are *paired* (they ran at the same time, under the same drift and neighbours).

* Throughput = median of the per-round throughputs; its 95 % interval is a percentile
  bootstrap of that median (resample the rounds with replacement, take the 2.5th and 97.5th
  percentiles of the resampled medians): Efron & Tibshirani, *An Introduction to the
  Bootstrap* (1993), ch. 13.
* Speedup of A over B = median over rounds of the paired ratio ``A[r] / B[r]``; its interval
  resamples whole rounds (pairs), so what hit both variants in a round cancels
  (Efron & Tibshirani 1993, ch. 6-7, bootstrap of paired data).
* Between two runs (the gate) nothing is paired: :func:`ratio_of_medians_ci` resamples each
  run's rounds independently (two-sample bootstrap, ibid. ch. 8).

Resampling uses a fixed seed, so the same rounds always give the same interval.

Accuracy. :func:`wilson_interval` is the Wilson score interval of a proportion (Wilson 1927;
Agresti & Coull 1998 show it keeps its nominal coverage for small samples, unlike the
normal approximation). Two runs of a deterministic model on the same images differ only in the
images whose correctness flipped; :func:`paired_accuracy_change_ci` bounds the change from
those flips, with the exact (Clopper-Pearson) interval of the fraction of flips that went
wrong — the exact conditional McNemar analysis (McNemar 1947; Agresti, *Categorical Data
Analysis*, 3rd ed., sec. 11.1).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import numpy as np

#: Bootstrap resamples: 2000 keeps the Monte-Carlo error of a 95 % percentile bound well below
#: the round-to-round noise (Efron & Tibshirani 1993, sec. 19.3 suggest >= 1000 for percentiles).
RESAMPLES = 2000
LEVEL = 0.95
SEED = 20261130


def _rounds(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} needs at least one finite value per round")
    return a


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def around(value: float, low: float, high: float) -> tuple[float, float, float]:
    """``(value, low, high)`` with the interval widened to contain ``value``.

    Why: a percentile bootstrap interval of a two-sample ratio need not contain the point estimate
    (the ratio of medians is not the median of the resampled ratios), and rounding can put a bound a
    hair past its value; every reader of an interval (error bars, ``contains``) assumes it does.
    """
    return value, min(low, value), max(high, value)


def bootstrap_median_ci(x: Sequence[float] | np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES,
                        seed: int = SEED) -> tuple[float, float, float]:
    """Median of ``x`` and its percentile-bootstrap interval.

    Args:
        x: One value per round (e.g. per-round throughput, samples/s).
        level: Confidence level (0.95 = 95 %).
        resamples: Bootstrap resamples.
        seed: Resampling seed (fixed: the same data give the same interval).

    Returns:
        ``(median, low, high)`` in the units of ``x``.

    Raises:
        ValueError: ``x`` is empty or not finite.
    """
    a = _rounds(x, "bootstrap_median_ci")
    rng = np.random.default_rng(seed)
    meds = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    return around(float(np.median(a)), *_percentiles(meds, level))


def paired_ratio_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = LEVEL,
                    resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """Median of the paired per-round ratios ``a[r] / b[r]`` and its bootstrap interval.

    Args:
        a: Per-round throughput of the variant.
        b: Per-round throughput of the baseline, same rounds (same length, same order).
        level: Confidence level.
        resamples: Bootstrap resamples.
        seed: Resampling seed.

    Returns:
        ``(ratio, low, high)``; e.g. ``(1.00, 0.93, 1.07)`` for a speedup indistinguishable from 1.

    Raises:
        ValueError: Different lengths, empty, non-finite or non-positive baseline values.
    """
    x, y = _rounds(a, "paired_ratio_ci"), _rounds(b, "paired_ratio_ci")
    if x.size != y.size:
        raise ValueError(f"paired rounds differ in length: {x.size} vs {y.size}")
    if np.any(y <= 0):
        raise ValueError("baseline throughput must be positive in every round")
    return bootstrap_median_ci(x / y, level, resamples, seed)


def ratio_of_medians_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = LEVEL,
                        resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """``median(a) / median(b)`` for two independent runs, with a two-sample bootstrap interval.

    Returns:
        ``(ratio, low, high)``.

    Raises:
        ValueError: Empty or non-finite input, or a non-positive median of ``b``.
    """
    x, y = _rounds(a, "ratio_of_medians_ci"), _rounds(b, "ratio_of_medians_ci")
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, size=(resamples, y.size))], axis=1)
    if np.any(my <= 0):
        raise ValueError("baseline throughput must be positive")
    return around(float(np.median(x) / np.median(y)), *_percentiles(mx / my, level))


def _z(level: float) -> float:
    # inverse normal CDF by bisection on erf (standard library only; 60 halvings ~ 1e-16)
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid / math.sqrt(2)) < level else (lo, mid)
    return (lo + hi) / 2


def wilson_bounds(p: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` (a fraction in [0, 1]) measured on ``n`` trials.

    The bounds are clamped to contain ``p`` and to lie in [0, 1], with exactly 1.0 above an all-success
    sample and 0.0 below an all-failure one (the formula's float rounding gives 0.9999999999999999).
    ``n <= 0`` gives ``(0.0, 1.0)``: nothing measured.
    """
    if n <= 0:
        return 0.0, 1.0
    z = _z(level)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))
    return (0.0 if p <= 0 else lo), (1.0 if p >= 1 else hi)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion, in percent (:func:`wilson_bounds`).

    Args:
        successes: Correct samples.
        n: Samples (> 0).
        level: Confidence level.

    Returns:
        ``(low, high)`` in percent, containing ``100 * successes / n`` and within [0, 100]; e.g. 520 of
        540 -> about (94.4, 97.5), 512 of 512 -> (99.26, 100.0).

    Raises:
        ValueError: ``n <= 0`` or ``successes`` outside ``[0, n]``.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, n > 0; got {successes} of {n}")
    lo, hi = wilson_bounds(successes / n, n, level)
    return 100 * lo, 100 * hi


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson 1934) interval of a binomial proportion, as fractions in [0, 1]."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n, n > 0; got {k} of {n}")
    alpha = (1 - level) / 2

    def solve(f, target: float) -> float:  # f increasing in p
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: _binom_sf(k, n, p), alpha)
    high = 1.0 if k == n else solve(lambda p: _binom_sf(k + 1, n, p), 1 - alpha)  # P(X <= k) = alpha
    return low, high


def paired_accuracy_change_ci(lost: int, gained: int, n: int, level: float = LEVEL) -> tuple[float, float, float]:
    """Change in accuracy (points) between two runs on the same ``n`` samples, from the flips.

    ``lost`` samples were right in the baseline and wrong now, ``gained`` the reverse. The change
    is ``100 * (gained - lost) / n``; conditional on ``m = lost + gained`` flips, the fraction
    that went wrong has the exact interval ``[p_lo, p_hi]`` (Clopper-Pearson), so the change lies
    in ``100 * m / n * (1 - 2 p)`` for ``p`` in that interval. No flips: the change is exactly 0.

    Returns:
        ``(change, low, high)`` in percentage points; one lost image of 540 gives about
        ``(-0.19, -0.19, +0.18)``: not evidence of a drop beyond a 0.5-point budget.

    Raises:
        ValueError: Negative counts, or more flips than samples.
    """
    if n <= 0 or lost < 0 or gained < 0 or lost + gained > n:
        raise ValueError(f"paired_accuracy_change_ci: bad counts lost={lost} gained={gained} n={n}")
    m = lost + gained
    change = 100.0 * (gained - lost) / n
    if m == 0:
        return 0.0, 0.0, 0.0
    p_lo, p_hi = clopper_pearson(lost, m, level)
    return change, 100.0 * m / n * (1 - 2 * p_hi), 100.0 * m / n * (1 - 2 * p_lo)


def pack_bits(flags: Sequence[bool] | np.ndarray) -> str:
    """Pack per-sample booleans (e.g. top-1 correct) into a compact base64 string (1 bit each)."""
    return base64.b64encode(np.packbits(np.asarray(flags, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` for ``n`` samples.

    Raises:
        ValueError: The text is not base64 or holds fewer than ``n`` bits.
    """
    try:
        raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a packed bit string: {exc}") from None
    bits = np.unpackbits(raw)
    if bits.size < n:
        raise ValueError(f"packed bits hold {bits.size} samples, expected {n}")
    return bits[:n].astype(bool)


def contains(interval: Sequence[float] | None, value: float) -> bool:
    """Whether ``value`` lies in the closed ``interval`` ``(low, high)``."""
    return interval is not None and float(interval[0]) <= value <= float(interval[1])
