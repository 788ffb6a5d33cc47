"""One batching rule: how samples on axis 0 become runtime calls, for every stage that runs a model.

Calibration, the fidelity guard, the accuracy budget, the FP16 overflow preview, bench accuracy and
the layer-wise comparison cut their samples with one :class:`BatchRule`, derived from the model's
inputs (:func:`rule_for_onnx` for a graph, :func:`batch_rule` for runner specs):

* a fixed first dim of the batched inputs (``[1, 1, 64, W]``) is the size of every call, whatever
  size the stage would pick; a last call with fewer samples is padded by repeating samples, and the
  padding is trimmed from the outputs;
* otherwise the stage's own call size is used (a bound on memory; ``0`` = all samples in one call);
* static inputs (per-call constants: ``static:<name>`` in an ``.npz``, docs/data-format.md) are never
  cut into samples: they go with every call. A static input's *batch axes* (the axes whose
  ``dim_param`` is the batched inputs' axis-0 one, :func:`trtopt.calib.source.batch_axes`) hold
  either 1 entry, broadcast to each call's size, or one entry per sample, cut with the samples.

Only numpy at import time; the ONNX helpers are imported by :func:`rule_for_onnx`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.errors import InputError

#: Outputs of one call: output name -> array.
Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class BatchRule:
    """How a model's samples are cut into runtime calls (see the module docstring).

    Attributes:
        fixed: The model's fixed batch size (every call holds exactly this many samples), or ``None``.
        static_axes: Static input name -> its batch axes (empty tuple: passed unchanged).
        fixed_inputs: Batched inputs whose first dim is fixed (named in messages).
    """

    fixed: int | None = None
    static_axes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    fixed_inputs: tuple[str, ...] = ()

    @property
    def static(self) -> frozenset[str]:
        """Names of the static (per-call constant) inputs."""
        return frozenset(self.static_axes)

    def call_size(self, wanted: int, n: int) -> int:
        """Samples per call for ``n`` samples when the stage would use ``wanted`` (``<= 0``: all in one call)."""
        if self.fixed:
            return self.fixed
        return wanted if 0 < wanted < n else max(n, 1)

    def samples(self, feeds: Mapping[str, np.ndarray]) -> int:
        """Number of samples in ``feeds`` (axis 0 of the batched inputs).

        Raises:
            InputError: No batched input, or batched inputs that differ in length.
        """
        lengths = {k: int(np.shape(v)[0]) for k, v in feeds.items() if k not in self.static_axes and np.ndim(v)}
        if not lengths:
            raise InputError("no batched input to cut into calls (every input is static)")
        if len(set(lengths.values())) > 1:
            raise InputError(f"batched inputs differ in sample count (axis 0): {lengths}; inputs that are not "
                             "samples on axis 0 go in the .npz as 'static:<name>'")
        return next(iter(lengths.values()))

    def take(self, feeds: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
        """The samples ``idx`` of ``feeds``: batched inputs on axis 0, static ones on their per-sample batch axes."""
        n = self.samples(feeds)
        out = {}
        for k, v in feeds.items():
            arr = np.asarray(v)
            if k not in self.static_axes:
                out[k] = np.ascontiguousarray(arr[idx])
                continue
            for ax in self.static_axes[k]:
                if arr.shape[ax] == n and n != 1:
                    arr = np.take(arr, idx, axis=ax)
            out[k] = arr
        return out

    def fit_static(self, feed: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        """``feed`` with every static input's size-1 batch axes broadcast to ``size`` samples (in place)."""
        for k, axes in self.static_axes.items():
            if k not in feed:
                continue
            v = np.asarray(feed[k])
            shape = list(v.shape)
            for ax in axes:
                if shape[ax] == 1:
                    shape[ax] = size
            feed[k] = v if tuple(shape) == v.shape else np.ascontiguousarray(np.broadcast_to(v, shape))
        return feed

    def calls(self, feeds: Mapping[str, np.ndarray], wanted: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Cut ``feeds`` into runtime calls.

        Args:
            feeds: Batched inputs (samples on axis 0) and static inputs.
            wanted: The stage's call size (``<= 0``: all samples in one call); a fixed batch overrides it.

        Yields:
            ``(feed of one call, real samples in it)``: with a fixed batch the last call is padded by
            repeating samples, and only the first ``real`` samples of its outputs count.
        """
        n = self.samples(feeds)
        size = self.call_size(wanted, n)
        for s in range(0, n, size):
            real = min(size, n - s)
            idx = np.arange(s, s + real)
            if self.fixed and real < size:
                idx = np.resize(idx, size)  # repeat samples: a fixed-batch model takes no other size
            yield self.fit_static(self.take(feeds, idx), len(idx)), real

    def run(self, fn: Callable[[dict[str, np.ndarray]], Outputs], feeds: Mapping[str, np.ndarray],
            wanted: int) -> dict[str, np.ndarray]:
        """Run ``fn`` on every call of :meth:`calls` and join its outputs along axis 0.

        Outputs whose axis 0 has the call's size are cut to the call's real samples (padding removed);
        other outputs (no batch axis first) are joined as they are.

        Returns:
            Output name -> array over all samples.
        """
        parts: dict[str, list[np.ndarray]] = {}
        for feed, real in self.calls(feeds, wanted):
            size = len(next(v for k, v in feed.items() if k not in self.static_axes))
            for k, v in fn(feed).items():
                a = np.asarray(v)
                parts.setdefault(k, []).append(a[:real] if a.ndim and a.shape[0] == size else a)
        return {k: np.concatenate(v) if v[0].ndim else v[0] for k, v in parts.items()}


def batch_rule(dims: Mapping[str, Sequence[int | None]], static: Collection[str] = (),
               static_axes: Mapping[str, tuple[int, ...]] | None = None) -> BatchRule:
    """The rule for a model whose inputs have ``dims`` (``None`` for a dynamic dim).

    Args:
        dims: Input name -> dims (graph inputs, or a runner's :class:`~trtopt.backends.base.TensorSpec` shapes).
        static: Inputs that are per-call constants.
        static_axes: Their batch axes (default: none, passed unchanged).

    Raises:
        InputError: Batched inputs with different fixed first dims (no call size fits them all).
    """
    static = set(static) | set(static_axes or {})
    fixed = {k: int(d[0]) for k, d in dims.items()
             if k not in static and len(d) and isinstance(d[0], int | np.integer) and d[0] > 0}
    if len(set(fixed.values())) > 1:
        raise InputError(f"the model's inputs have different fixed first dims ({fixed}): no call size fits them "
                         "all; inputs that are not samples on axis 0 go in the .npz as 'static:<name>'")
    axes = {k: tuple((static_axes or {}).get(k, ())) for k in static}
    return BatchRule(next(iter(fixed.values()), None), axes, tuple(sorted(fixed)))


def rule_for_onnx(model: Any, static: Collection[str] = ()) -> BatchRule:
    """The rule of an ONNX model (``ModelProto``): its graph inputs' fixed dims and the static inputs' batch axes."""
    from trtopt.calib.source import batch_axes, model_input_specs

    specs = model_input_specs(model)
    static = [k for k in static if k in specs]
    return batch_rule({k: v[0] for k, v in specs.items()}, static, batch_axes(model, static))
