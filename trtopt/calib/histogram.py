"""Streaming histograms of |x| that are exactly mergeable: the same data gives the same counts in any batching.

Linear histogram (:class:`AbsHistogram`): the bin width is always a power of two, ``w = 2**e``,
with ``e`` the smallest exponent such that ``max|x| < w * bins`` (``bins`` = ``num_bins`` rounded
up to a power of two). ``|x| * 2**-e`` is exact in float32, so the bin index ``floor(|x| / w)`` has
no rounding at all; when a later batch raises the maximum, ``e`` grows by ``d`` and bins are merged
``2**d``-to-1 in aligned groups, which is exactly binning at the new width because
``floor(x / 2w) == floor(floor(x / w) / 2)``. The final width depends only on the global maximum,
so the final counts are identical whatever the batch size and sample order
(pytorch-quantization instead fixes the width from the *first* batch, so its ranges move with the
order). Memory is ``bins`` int64 per tensor, and every method working on the histogram is O(bins).

Log histogram (``AbsHistogram.log_counts``): counts per float32 exponent and top 3 mantissa bits
(2048 bins, ~9 % relative resolution over the whole float range, also exact and order-independent:
the index is the bit pattern ``>> 20``). It keeps the shape of the data visible when a handful of
outliers stretch the linear range so far that every ordinary value lands in bin 0.
"""

from __future__ import annotations

import math

import numpy as np

#: Bits of the float32 pattern dropped for the log histogram (23 mantissa bits - 3 kept).
LOG_SHIFT = 20
LOG_BINS = 1 << (31 - LOG_SHIFT)
_MIN_EXP = -120  # keeps 2**-e a normal float32 (values below 2**-109 all land in bin 0)


def pow2_bins(num_bins: int) -> int:
    """``num_bins`` rounded up to a power of two (the linear histogram's bin count)."""
    return 1 << max(4, math.ceil(math.log2(max(num_bins, 1))))


def width_exponent(xmax: float, bins: int) -> int:
    """Smallest ``e`` with ``xmax < 2**e * bins`` (``bins`` a power of two), floored at ``_MIN_EXP``."""
    _, ex = math.frexp(xmax)  # xmax = m * 2**ex with 0.5 <= m < 1, so xmax < 2**ex
    return max(ex - (bins.bit_length() - 1), _MIN_EXP)


def merge_aligned(counts: np.ndarray, d: int) -> np.ndarray:
    """Merge aligned groups of ``2**d`` bins (same length, zeros appended): binning at ``2**d`` times the width."""
    if d <= 0:
        return counts
    k = 1 << d
    n = len(counts)
    if k >= n:
        out = np.zeros_like(counts)
        out[0] = counts.sum()
        return out
    out = np.zeros_like(counts)
    out[: n // k] = counts.reshape(-1, k).sum(axis=1)
    return out


def log_edges() -> np.ndarray:
    """Lower edges ``[LOG_BINS + 1]`` of the log histogram's bins (float64; the last one is +inf)."""
    finite = 255 << (23 - LOG_SHIFT)  # exponent 255: Inf/NaN patterns (never counted)
    bits = (np.arange(finite, dtype=np.int64) << LOG_SHIFT).astype(np.uint32).view(np.float32)
    return np.concatenate([bits.astype(np.float64), np.full(LOG_BINS - finite + 1, np.inf)])


class AbsHistogram:
    """Histogram of absolute values with a power-of-two bin width (see the module docstring).

    Args:
        num_bins: Bin count, rounded up to a power of two (2048 by default, as in TensorRT).
        skip_zeros: Ignore exact zeros (pytorch-quantization's ``skip_zeros``).
        scratch: Work buffers shared by histograms updated from one thread (an empty dict to
            start); reusing the index buffer saves a batch-sized allocation per update.

    Attributes:
        counts: int64 ``[bins]`` (``None`` until a non-zero value is seen).
        exponent: ``e`` of the bin width ``2**e``.
        log_counts: int64 ``[LOG_BINS]`` log histogram (zeros in bin 0).
        amax: Exact max |x| of the finite values.
        count: Finite values seen (zeros included unless skipped).
        nonfinite: NaN/Inf values seen and left out of every statistic.
    """

    def __init__(self, num_bins: int = 2048, skip_zeros: bool = False, scratch: dict | None = None) -> None:
        self.num_bins = pow2_bins(num_bins)
        self.skip_zeros = skip_zeros
        self.scratch = scratch
        self.counts: np.ndarray | None = None
        self.exponent = 0
        self.pending_zeros = 0  # zeros seen before any non-zero value fixed the bin width
        self.log_counts = np.zeros(LOG_BINS, dtype=np.int64)
        self.amax = 0.0
        self.count = 0
        self.nonfinite = 0

    @property
    def width(self) -> float:
        """Bin width ``2**exponent``."""
        return math.ldexp(1.0, self.exponent)

    @property
    def used(self) -> int:
        """Bins up to the one holding ``amax`` (the histogram the range methods see)."""
        if self.counts is None:
            return 0
        return min(math.floor(self.amax / self.width) + 1, len(self.counts))

    @property
    def edges(self) -> np.ndarray:
        """Edges ``[bins + 1]`` of all bins (``edges[i] = i * width``), matching :attr:`counts`."""
        n = 0 if self.counts is None else len(self.counts)
        return np.arange(n + 1, dtype=np.float64) * self.width

    @property
    def used_edges(self) -> np.ndarray:
        """Edges ``[used + 1]`` of the used bins, matching :attr:`used_counts`."""
        return np.arange(self.used + 1, dtype=np.float64) * self.width

    @property
    def used_counts(self) -> np.ndarray:
        """Counts ``[used]`` (empty bins above ``amax`` trimmed)."""
        return np.zeros(0, np.int64) if self.counts is None else self.counts[: self.used]

    def update(self, x: np.ndarray, owned: bool = False) -> None:
        """Add one batch of values (any shape, any float dtype).

        Args:
            x: Values; NaN/Inf are counted in ``nonfinite`` and left out.
            owned: The caller gives up ``x`` (e.g. a fresh ONNX Runtime output), so it may be
                overwritten in place instead of copied.
        """
        a = np.asarray(x).ravel()
        if a.dtype != np.float32:
            a, owned = a.astype(np.float32), True
        a = np.abs(a, out=a) if owned and a.flags.writeable else np.abs(a)
        if self.skip_zeros:
            a = a[a != 0]
        if a.size == 0:
            return
        xmax = float(a.max())
        if not math.isfinite(xmax):
            # e.g. the -inf of an additive attention mask: drop the non-finite values, count them
            finite = a[np.isfinite(a)]
            self.nonfinite += a.size - finite.size
            self.update(finite, owned=True)
            return
        self.amax = max(self.amax, xmax)
        self.count += a.size
        idx = self._index_buffer(a.size)
        # log histogram first (reads the bit patterns before the scaling below overwrites a)
        np.right_shift(a.view(np.int32), LOG_SHIFT, out=idx)
        self.log_counts += np.bincount(idx, minlength=LOG_BINS)
        if xmax == 0:
            if self.counts is None:  # an all-zero batch cannot fix the bin width: remember its zeros
                self.pending_zeros += a.size
            else:
                self.counts[0] += a.size
            return
        e = width_exponent(xmax, self.num_bins)
        if self.counts is None:
            self.counts = np.zeros(self.num_bins, dtype=np.int64)
            self.counts[0] += self.pending_zeros
            self.exponent = e
        elif e > self.exponent:
            self.counts = merge_aligned(self.counts, e - self.exponent)
            self.exponent = e
        # |x| * 2**-e is exact in float32 and < bins: truncation is floor(|x| / width) with no rounding
        np.multiply(a, np.float32(math.ldexp(1.0, -self.exponent)), out=a)
        np.copyto(idx, a, casting="unsafe")
        self.counts += np.bincount(idx, minlength=self.num_bins)

    def _index_buffer(self, n: int) -> np.ndarray:
        # intp: what bincount consumes without a converting copy
        if self.scratch is None:
            return np.empty(n, dtype=np.intp)
        buf = self.scratch.get("idx")
        if buf is None or buf.size < n:
            buf = self.scratch["idx"] = np.empty(n, dtype=np.intp)
        return buf[:n]

    def merge(self, other: AbsHistogram) -> None:
        """Add another histogram (any exponent; the result equals one histogram of both data sets)."""
        if other.num_bins != self.num_bins:
            raise ValueError("cannot merge histograms with different bin counts")
        self.log_counts = self.log_counts + other.log_counts
        self.amax = max(self.amax, other.amax)
        self.count += other.count
        self.nonfinite += other.nonfinite
        if other.counts is None:
            self.pending_zeros += other.pending_zeros
            if self.counts is not None:
                self.counts[0] += other.pending_zeros
                self.pending_zeros = 0
            return
        theirs, e = other.counts.copy(), other.exponent
        if self.counts is None:
            self.counts, self.exponent = theirs, e
            self.counts[0] += self.pending_zeros
            self.pending_zeros = 0
            return
        top = max(self.exponent, e)
        self.counts = merge_aligned(self.counts, top - self.exponent) + merge_aligned(theirs, top - e)
        self.exponent = top

    def log_histogram(self, below: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [k], edges [k + 1])`` of the log histogram's occupied range (non-uniform edges).

        Args:
            below: Leave out the bins at and above the one holding ``below`` (e.g. a handful of outliers).
        """
        counts = self.log_counts.copy()
        if below is not None:
            counts[self._log_bin(below):] = 0
        nz = np.flatnonzero(counts)
        if nz.size == 0:
            return np.zeros(0, np.int64), np.zeros(1)
        hi = int(nz[-1]) + 1
        edges = log_edges()[: hi + 1].copy()
        if below is None:
            edges[hi] = max(self.amax, edges[hi - 1])
        return counts[:hi], edges

    @staticmethod
    def _log_bin(value: float) -> int:
        return int(np.array([value], np.float32).view(np.int32)[0]) >> LOG_SHIFT

    def count_above(self, threshold: float) -> int:
        """Values in the log bins from the one holding ``threshold`` up (all ``|x| >= threshold``, and a few below)."""
        if threshold <= 0:
            return self.count
        return int(self.log_counts[self._log_bin(threshold):].sum())


class ChannelAbsMax:
    """Running per-channel max|x| over the last axis, for the tensors named in ``names``.

    SmoothQuant needs, for every activation feeding a weighted MatMul/Gemm, the largest
    magnitude seen in each input channel (the reduction axis ``K``, i.e. the last axis).
    NaN/Inf values are left out (a channel that saw only NaN/Inf keeps 0) and counted in
    ``nonfinite``, as in the histograms.

    Args:
        names: Tensors to track; updates for other names are ignored.
    """

    def __init__(self, names: set[str] | frozenset[str] = frozenset()) -> None:
        self.names = set(names)
        self.values: dict[str, np.ndarray] = {}
        self.nonfinite: dict[str, int] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def update(self, name: str, x) -> None:
        """Fold one batch of ``name`` (numpy array or torch tensor, channels last) into the maxima.

        Call before anything overwrites ``x`` in place (the histogram update may).
        """
        numel = x.size if isinstance(x, np.ndarray) else x.numel()
        if name not in self.names or x.ndim == 0 or numel == 0:
            return
        flat = x.reshape(-1, x.shape[-1])
        if isinstance(x, np.ndarray):
            # max and -min instead of abs(): two reductions, no full-size temporary
            cur = np.maximum(flat.max(axis=0), -flat.min(axis=0)).astype(np.float64)
            if not np.isfinite(cur).all():  # rare: redo on the finite values only
                ok = np.isfinite(flat)
                self.nonfinite[name] = self.nonfinite.get(name, 0) + int(ok.size - ok.sum())
                cur = np.where(ok, np.abs(flat), 0).max(axis=0).astype(np.float64)
        else:  # torch tensor (any device): reduce there, copy K floats back
            cur = flat.abs().amax(dim=0).double().cpu().numpy()
            if not np.isfinite(cur).all():
                ok = flat.isfinite()
                self.nonfinite[name] = self.nonfinite.get(name, 0) + int(ok.numel() - ok.sum().item())
                cur = flat.abs().where(ok, flat.new_zeros(())).amax(dim=0).double().cpu().numpy()
        prev = self.values.get(name)
        self.values[name] = cur if prev is None or prev.shape != cur.shape else np.maximum(prev, cur)
