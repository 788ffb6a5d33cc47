"""Histogram collection through PyTorch: the model runs on a CUDA GPU when present, else on the CPU.

:func:`collect_histograms_torch` has the contract of :func:`trtopt.calib.collect.collect_histograms`
(same data hash, sample count, batching and errors) but runs the ONNX graph with
:class:`~trtopt.calib.torch_exec.TorchGraphExecutor` and folds each calibrated tensor into a
:class:`TorchAbsHistogram` on the same device, so activations never leave the GPU: per batch
and tensor only the running maximum (one scalar) is read back.

torch is imported inside functions only (it is an optional dependency).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from trtopt.calib.batches import iter_batches
from trtopt.calib.config import CalibrationConfig, ProgressFn
from trtopt.calib.histogram import LOG_BINS, LOG_SHIFT, AbsHistogram, ChannelAbsMax, pow2_bins, width_exponent
from trtopt.calib.source import model_input_specs
from trtopt.errors import ConfigError, InputError
from trtopt.optional import is_installed, require

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def resolve_device(device: str) -> str:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into the device the torch collector uses.

    Args:
        device: ``auto`` (CUDA when torch is installed and sees a GPU, else CPU), ``cpu``,
            ``cuda`` or ``cuda:N``.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ConfigError: Not one of the accepted spellings.
        InputError: CUDA was requested but is not available.
    """
    dev = str(device).strip().lower()
    if dev == "cpu":
        return dev
    if dev == "auto":
        if not is_installed("torch"):
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    index = dev[5:] if dev.startswith("cuda:") else ""
    if dev != "cuda" and not index.isdigit():
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{device}'")
    torch = require("torch", detail="the torch histogram collector")
    if not torch.cuda.is_available():
        raise InputError(f"device '{device}' requested but CUDA is not available to torch "
                         f"{torch.__version__}; use device='cpu' or 'auto'")
    if index and int(index) >= torch.cuda.device_count():
        raise InputError(f"device '{device}' requested but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _accumulate(counts: Any, idx: Any, bincount: bool) -> None:
    """``counts += bincount(idx, minlength=len(counts))`` in place (identical integer counts either way).

    A GPU uses ``bincount`` (block-private histograms cope with a hot zero bin; it reads the
    index range back, two tiny syncs). On the CPU ``index_add_`` of ones is one pass, where
    ``bincount`` first scans the indices for their minimum and maximum.
    """
    if bincount:
        counts += idx.bincount(minlength=counts.shape[0])
    else:
        counts.index_add_(0, idx, counts.new_ones(1).expand(idx.shape[0]))


def _merge_aligned(counts: Any, d: int) -> Any:
    """Torch twin of :func:`trtopt.calib.histogram.merge_aligned`."""
    if d <= 0:
        return counts
    k, n = 1 << d, counts.shape[0]
    out = counts.new_zeros(n)
    if k >= n:
        out[0] = counts.sum()
    else:
        out[: n // k] = counts.reshape(-1, k).sum(1)
    return out


class TorchAbsHistogram:
    """:class:`~trtopt.calib.histogram.AbsHistogram` with its counts and update on a torch device.

    Same counts bit for bit on the same values: power-of-two bin width ``2**e`` from the running
    maximum, aligned ``2**d``-to-1 merging when it grows, the exact index ``floor(|x| * 2**-e)``
    in float32, and the log histogram from the float32 bit pattern ``>> 20``.

    Args:
        num_bins: Bin count (rounded up to a power of two).
        skip_zeros: Ignore exact zeros.
        device: Torch device of the counts (and of the tensors given to :meth:`update`).
        scratch: Work buffers to reuse across updates, shared by histograms on the same device
            (an empty dict to start); without it every update allocates two batch-sized temporaries.
    """

    def __init__(self, num_bins: int = 2048, skip_zeros: bool = False, device: str = "cpu",
                 scratch: dict[str, Any] | None = None) -> None:
        import torch

        self.num_bins, self.skip_zeros, self.device = pow2_bins(num_bins), skip_zeros, torch.device(device)
        self.scratch = scratch
        self.counts: Any = None  # torch.int64 [bins] on ``device``
        self.log_counts = torch.zeros(LOG_BINS, dtype=torch.int64, device=self.device)
        self.exponent = 0
        self.pending_zeros = 0
        self.amax = 0.0
        self.count = 0
        self.nonfinite = 0
        self._bincount = self.device.type != "cpu"

    def update(self, x: Any) -> None:
        """Add one batch of values (a torch tensor of any float dtype and shape; not modified)."""
        import torch

        src = x.reshape(-1).to(self.device)
        n = src.numel()
        if n == 0:
            return
        a, idx = self._buffers(n)
        if src.dtype == torch.float32:
            torch.abs(src, out=a)
        else:
            a.copy_(src).abs_()
        if self.skip_zeros:
            nz = a != 0
            if not bool(nz.all()):
                a = a[nz]
                idx = idx[: a.numel()]
                n = a.numel()
            if n == 0:
                return
        xmax = a.max().item()
        if not math.isfinite(xmax):  # same rule as AbsHistogram: drop NaN/Inf, count them
            finite = a[torch.isfinite(a)]
            self.nonfinite += n - finite.numel()
            self.update(finite)
            return
        self.amax = max(self.amax, xmax)
        self.count += n
        torch.bitwise_right_shift(a.view(torch.int32), LOG_SHIFT, out=idx)
        _accumulate(self.log_counts, idx, self._bincount)
        if xmax == 0:
            if self.counts is None:
                self.pending_zeros += n
            else:
                self.counts[0] += n
            return
        e = width_exponent(xmax, self.num_bins)
        if self.counts is None:
            self.counts = torch.zeros(self.num_bins, dtype=torch.int64, device=self.device)
            self.counts[0] += self.pending_zeros
            self.exponent = e
        elif e > self.exponent:
            self.counts = _merge_aligned(self.counts, e - self.exponent)
            self.exponent = e
        a.mul_(math.ldexp(1.0, -self.exponent))  # a power of two: exact in float32, as in numpy
        _accumulate(self.counts, idx.copy_(a), self._bincount)  # float -> int32 truncates, as astype does

    def _buffers(self, n: int) -> tuple[Any, Any]:
        """Float32 and int32 work vectors of length ``n`` (reused from ``scratch`` when given)."""
        import torch

        if self.scratch is None:
            return (torch.empty(n, dtype=torch.float32, device=self.device),
                    torch.empty(n, dtype=torch.int32, device=self.device))
        for key, dtype in (("f32", torch.float32), ("i32", torch.int32)):
            buf = self.scratch.get(key)
            if buf is None or buf.numel() < n:
                self.scratch[key] = torch.empty(n, dtype=dtype, device=self.device)
        return self.scratch["f32"][:n], self.scratch["i32"][:n]

    def to_numpy(self) -> AbsHistogram:
        """The equivalent :class:`AbsHistogram` (counts copied to the host as int64)."""
        h = AbsHistogram(self.num_bins, self.skip_zeros)
        h.counts = None if self.counts is None else self.counts.cpu().numpy().astype(np.int64)
        h.log_counts = self.log_counts.cpu().numpy().astype(np.int64)
        h.exponent, h.amax, h.count, h.pending_zeros = self.exponent, self.amax, self.count, self.pending_zeros
        h.nonfinite = self.nonfinite
        return h


def _update(hist: TorchAbsHistogram, name: str, t: Any) -> None:
    try:
        hist.update(t)
    except InputError as exc:
        raise InputError(f"calibrated tensor '{name}': {exc}") from None


def collect_histograms_torch(model: onnx.ModelProto, source: Iterable[dict[str, np.ndarray]], targets: list[str],
                             config: CalibrationConfig, progress: ProgressFn | None = None, total: int = 0,
                             types: dict[str, int] | None = None, channel: ChannelAbsMax | None = None,
                             device: str = "cpu") -> tuple[dict[str, AbsHistogram], str, int]:
    """Stream ``source`` through the model in PyTorch and histogram ``targets`` on ``device``.

    Same contract as :func:`trtopt.calib.collect.collect_histograms`: batches are validated
    against the model inputs, hashed (sha256 over sorted input names and bytes), cut to the
    model's static batch size or ``config.run_batch_size``, and stopped after ``config.max_samples``.

    Args:
        model: The FP32 model.
        source: Iterable of ``{input name: ndarray}`` batches.
        targets: Tensor names to histogram (graph inputs allowed); non-float ones are skipped.
        config: Calibration options (``num_bins``, ``skip_zeros``, ``max_samples``,
            ``run_batch_size``, ``intra_op_threads`` for CPU runs).
        progress: Optional ``callback(samples_done, samples_total)`` after every batch.
        total: Samples expected (passed to ``progress``; 0 = unknown).
        types: Tensor elem types (from :func:`~trtopt.onnx.graph.float_tensor_types`), used
            to skip known non-float targets early; optional.
        channel: Optional per-channel max|x| tracker; receives every batch of the tensors it tracks
            (reduced on the device, ``K`` floats copied back).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`resolve_device`).

    Returns:
        ``(histograms of the targets that saw non-zero data, data sha256, samples seen)``.

    Raises:
        InputError: Data not matching the model, an op the torch collector cannot run, CUDA
            requested but unavailable, or an empty source.
    """
    require("torch", detail="the torch histogram collector")
    from trtopt.calib.torch_exec import TorchGraphExecutor
    from trtopt.torch_util import torch_threads

    dev = resolve_device(device)
    specs = model_input_specs(model)
    executor = TorchGraphExecutor(model, dev)
    types = types or {}
    scratch: dict[str, Any] = {}  # one pair of work buffers for all histograms
    hists = {t: TorchAbsHistogram(config.num_bins, config.skip_zeros, dev, scratch) for t in targets
             if types.get(t) is None or types[t] in _FLOATS}
    want = frozenset(hists)
    digest = hashlib.sha256()
    seen = 0
    threads = torch_threads(config.intra_op_threads) if config.intra_op_threads > 0 and dev == "cpu" \
        else contextlib.nullcontext()
    with threads:
        for n, subs in iter_batches(source, specs, config, digest, model):
            for sub in subs:
                with contextlib.closing(executor.run(sub, want)) as tensors:  # restores TF32 even on errors
                    for name, t in tensors:
                        if t.is_floating_point():
                            if channel is not None:
                                channel.update(name, t)
                            _update(hists[name], name, t)
            seen += n
            if progress:
                progress(seen, total)
    if seen == 0:
        raise InputError("calibration data source yielded no batches")
    return {k: h.to_numpy() for k, h in hists.items() if h.counts is not None}, digest.hexdigest(), seen
