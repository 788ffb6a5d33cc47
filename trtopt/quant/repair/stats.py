"""Per-channel output means of a model's layers over calibration data (what bias correction compares).

Runs the model in ONNX Runtime with the layer outputs exposed (:func:`trtopt.onnx.exec.exposed_bytes`),
one call of the batching rule (:mod:`trtopt.batching`) at a time, and keeps only running sums, so
memory is one call's intermediates, never the whole data set's. One session serves many
measurements: extra graph inputs (bias correction feeds the biases it is changing) go with every
call, and ONNX Runtime computes only the nodes the fetched tensors need.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import onnx

from trtopt.batching import rule_for_onnx
from trtopt.onnx.dims import with_symbolic_dims
from trtopt.onnx.exec import exposed_bytes, make_session, run_session


class LayerMeans:
    """Measure per-channel means of chosen tensors of one model, many times, with one session.

    Args:
        model: The model (not modified).
        tensors: Tensor name -> its channel axis (``1`` for Conv ``[N, C, ...]``, ``-1`` for MatMul ``[..., N]``).
        static: Inputs that are per-call constants.

    Raises:
        InputError: ONNX Runtime cannot load the model.
    """

    def __init__(self, model: onnx.ModelProto, tensors: Mapping[str, int], static: Collection[str] = ()) -> None:
        model = with_symbolic_dims(model)
        self.axes = dict(tensors)
        self.sess = make_session(exposed_bytes(model, list(tensors)))
        self.rule = rule_for_onnx(model, static)

    def __call__(self, inputs: Mapping[str, np.ndarray], names: Sequence[str] | None = None,
                 extra: Mapping[str, np.ndarray] | None = None, batch_size: int = 16,
                 what: str = "the model") -> dict[str, np.ndarray]:
        """Tensor name -> ``[C]`` float64 mean over every sample and position.

        Args:
            inputs: Input name -> array, samples on axis 0.
            names: Tensors to measure (default: all given at construction).
            extra: Further graph inputs passed whole with every call (named in ``static`` at construction).
            batch_size: Samples per ONNX Runtime call (the model's fixed batch size wins).
            what: What is being run, for error messages.

        Raises:
            InputError: ONNX Runtime refused the inputs.
        """
        names = list(self.axes) if names is None else list(names)
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for feed, real in self.rule.calls({**inputs, **(extra or {})}, batch_size):
            for name, val in zip(names, run_session(self.sess, names, feed, what)):
                ax = self.axes[name]
                a = np.asarray(val, dtype=np.float64)[:real]
                a = np.moveaxis(a, ax, -1).reshape(-1, a.shape[ax])
                sums[name] = sums.get(name, 0.0) + a.sum(axis=0)
                counts[name] = counts.get(name, 0) + a.shape[0]
        return {n: sums[n] / max(counts[n], 1) for n in names}


def channel_means(model: onnx.ModelProto, tensors: Mapping[str, int], inputs: Mapping[str, np.ndarray],
                  batch_size: int = 16, static: Collection[str] = (), what: str = "the model"
                  ) -> dict[str, np.ndarray]:
    """One measurement with :class:`LayerMeans`: tensor name -> ``[C]`` mean, float64."""
    return LayerMeans(model, tensors, static)(inputs, batch_size=batch_size, what=what)
