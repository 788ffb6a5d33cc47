"""Streaming histogram of |x| with bounded memory (pytorch-quantization / ModelOpt style).

The first batch fixes the bin width: ``num_bins`` bins over ``[0, max|x|]``. A later batch
with a larger maximum *appends bins of the same width* (pytorch-quantization's
``HistogramCalibrator``), so earlier counts never need re-binning and memory stays
``O(bins)`` per tensor however many batches are seen. (TensorRT itself doubles the range,
which leaves half the bins empty after a late doubling; appending avoids that.)
"""

from __future__ import annotations

import math

import numpy as np

_MIN_WIDTH = 1e-30  # keeps 1/width finite in float32
_MAX_GROWTH = 64  # at most num_bins * 64 bins before bins are merged (see AbsHistogram._coarsen)


class AbsHistogram:
    """Histogram of absolute values, grown by appending equal-width bins.

    Args:
        num_bins: Number of bins for the first batch's range.
        skip_zeros: Ignore exact zeros (pytorch-quantization's ``skip_zeros``).
        scratch: Work buffers shared by histograms updated from one thread (an empty dict to
            start); reusing the index buffer saves a batch-sized allocation and its page faults
            per update, about a fifth of the update's time.
    """

    def __init__(self, num_bins: int = 2048, skip_zeros: bool = False, scratch: dict | None = None) -> None:
        self.num_bins = num_bins
        self.skip_zeros = skip_zeros
        self.scratch = scratch
        self.counts: np.ndarray | None = None  # int64 [n]
        self.width = 0.0
        self.pending_zeros = 0  # zeros seen before any non-zero value fixed the bin width
        self.amax = 0.0  # exact running max |x|
        self.count = 0
        self.nonfinite = 0  # NaN/Inf values seen and left out

    @property
    def edges(self) -> np.ndarray:
        """Bin edges ``[n + 1]`` (``edges[i] = i * width``)."""
        if self.counts is None:
            return np.zeros(1)
        return np.arange(len(self.counts) + 1, dtype=np.float64) * self.width

    def update(self, x: np.ndarray, owned: bool = False) -> None:
        """Add one batch of values (any shape, any float dtype).

        Args:
            x: Values.
            owned: The caller gives up ``x`` (e.g. a fresh ONNX Runtime output), so it may be
                overwritten in place instead of copied (saves two full-size temporaries).
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
            # e.g. the -inf of an additive attention mask (scope="all"): such a tensor is never
            # quantized; drop the non-finite values, keep their count, histogram the rest
            finite = a[np.isfinite(a)]
            self.nonfinite += a.size - finite.size
            self.update(finite, owned=True)
            return
        self.amax = max(self.amax, xmax)
        self.count += a.size
        if self.counts is None:
            if xmax == 0:  # an all-zero batch cannot fix the bin width: remember its zeros
                self.pending_zeros += a.size
                return
            # torch.histc(min=0, max=amax) semantics for the first non-zero batch
            self.width = max(xmax / self.num_bins, _MIN_WIDTH)
            self.counts = np.zeros(self.num_bins, dtype=np.int64)
            self.counts[0] += self.pending_zeros
        if xmax > len(self.counts) * self.width:
            needed = math.ceil(xmax / self.width)
            if needed > self.num_bins * _MAX_GROWTH:
                self._coarsen(needed)
                needed = math.ceil(xmax / self.width)
            extra = needed - len(self.counts)
            self.counts = np.concatenate([self.counts, np.zeros(max(extra, 1), dtype=np.int64)])
        # uniform bins: index = floor(x / width); the right edge of the last bin is inclusive
        scale = np.float32(1.0 / self.width)
        np.multiply(a, scale, out=a)
        last = len(self.counts) - 1
        if int(np.float32(xmax) * scale) > last:  # only values at the very top can pass the last bin;
            np.minimum(a, np.float32(last), out=a)  # clamping before truncation = clamping after it
        idx = self._index_buffer(a.size)
        np.copyto(idx, a, casting="unsafe")  # float32 -> intp truncates, as astype does
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def _index_buffer(self, n: int) -> np.ndarray:
        if self.scratch is None:
            return np.empty(n, dtype=np.intp)
        buf = self.scratch.get("idx")
        if buf is None or buf.size < n:
            buf = self.scratch["idx"] = np.empty(n, dtype=np.intp)
        return buf[:n]

    def _coarsen(self, needed: int) -> None:
        """Merge bins k-to-1 when a range explodes (e.g. a -3.4e38 attention mask after small values).

        pytorch-quantization would allocate ``needed`` bins; beyond ``num_bins * 64`` we widen the
        bins instead so memory stays bounded. Ordinary activations never get here.
        """
        k = math.ceil(needed / (self.num_bins * _MAX_GROWTH))
        n = len(self.counts)
        if k >= n:
            self.counts = np.array([self.counts.sum()], dtype=np.int64)
        else:
            padded = np.zeros(math.ceil(n / k) * k, dtype=np.int64)
            padded[:n] = self.counts
            self.counts = padded.reshape(-1, k).sum(axis=1)
        self.width *= k

    def merge(self, other: AbsHistogram) -> None:
        """Add another histogram with the same bin width (e.g. from another worker)."""
        if other.counts is None:
            return
        if self.counts is None:
            self.counts, self.width = other.counts.copy(), other.width
        else:
            if not math.isclose(self.width, other.width, rel_tol=1e-9):
                raise ValueError("cannot merge histograms with different bin widths")
            n = max(len(self.counts), len(other.counts))
            merged = np.zeros(n, dtype=np.int64)
            merged[: len(self.counts)] += self.counts
            merged[: len(other.counts)] += other.counts
            self.counts = merged
        self.amax = max(self.amax, other.amax)
        self.count += other.count


class ChannelAbsMax:
    """Running per-channel max|x| over the last axis, for the tensors named in ``names``.

    SmoothQuant needs, for every activation feeding a weighted MatMul/Gemm, the largest
    magnitude seen in each input channel (the reduction axis ``K``, i.e. the last axis).
    Keeping only ``K`` floats per tensor costs nothing next to the histograms.

    Args:
        names: Tensors to track; updates for other names are ignored.
    """

    def __init__(self, names: set[str] | frozenset[str] = frozenset()) -> None:
        self.names = set(names)
        self.values: dict[str, np.ndarray] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def update(self, name: str, x) -> None:
        """Fold one batch of ``name`` (numpy array or torch tensor, channels last) into the maxima.

        Call before anything overwrites ``x`` in place (the histogram update may).
        """
        numel = x.size if isinstance(x, np.ndarray) else x.numel()
        if name not in self.names or x.ndim == 0 or numel == 0:
            return
        if isinstance(x, np.ndarray):
            flat = x.reshape(-1, x.shape[-1])
            # max and -min instead of abs(): two reductions, no full-size temporary
            cur = np.maximum(flat.max(axis=0), -flat.min(axis=0)).astype(np.float64)
        else:  # torch tensor (any device): reduce there, copy K floats back
            flat = x.reshape(-1, x.shape[-1])
            cur = flat.abs().amax(dim=0).double().cpu().numpy()
        prev = self.values.get(name)
        self.values[name] = cur if prev is None or prev.shape != cur.shape else np.maximum(prev, cur)
