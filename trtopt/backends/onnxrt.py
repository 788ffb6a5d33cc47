"""ONNX Runtime runner: the embedded CPU default and the numeric reference.

Sessions are made and run by :mod:`trtopt.onnx.exec`, which the stages that run a graph on data
(calibration, layer-wise comparison, the fidelity guard) use directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from trtopt.backends.base import Runner, TensorSpec
from trtopt.errors import InputError
from trtopt.onnx.exec import ORT_TYPES, explain_run_error, make_session, run_session


class OnnxRuntimeRunner(Runner):
    """Run an ONNX model with ONNX Runtime.

    A model file is first opened in a helper process (:func:`trtopt.onnx.ort_probe.probe_load`):
    a model that crashes ONNX Runtime raises :class:`~trtopt.errors.InputError` here instead.

    Args:
        model: Path to the ``.onnx`` file (or its bytes).
        providers: Execution providers in priority order (CPU by default).
        intra_op_threads: Threads per op; 0 = ONNX Runtime's default (all cores).

    Example:
        >>> with OnnxRuntimeRunner("model.onnx") as r:  # doctest: +SKIP
        ...     out = r.infer({"input": x})
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self.session = None

    def _activate(self) -> None:
        if not isinstance(self.model, bytes):
            # a file: open it in a helper process first, so a model that crashes ONNX Runtime while it
            # is optimized fails this runner in one error instead of ending the benchmark or the run
            from trtopt.onnx.ort_probe import probe_load

            if Path(self.model).is_file() and (failure := probe_load(self.model)) is not None:
                raise InputError(f"ONNX Runtime cannot load {self.model}: {failure}")
        self.session = make_session(self.model, self.providers, self.intra_op_threads)

    def _deactivate(self) -> None:
        self.session = None

    @staticmethod
    def _specs(args) -> list[TensorSpec]:
        out = []
        for a in args:
            if a.type not in ORT_TYPES:
                raise InputError(f"tensor '{a.name}' has unsupported type {a.type}")
            shape = tuple(d if isinstance(d, int) else None for d in a.shape)
            out.append(TensorSpec(a.name, shape, np.dtype(ORT_TYPES[a.type])))
        return out

    def input_specs(self) -> list[TensorSpec]:
        """Return the session's inputs."""
        return self._specs(self.session.get_inputs())

    def output_specs(self) -> list[TensorSpec]:
        """Return the session's outputs."""
        return self._specs(self.session.get_outputs())

    def describe(self) -> dict[str, object]:
        """Return provider and thread settings."""
        return {
            "backend": self.backend,
            "providers": list(self.session.get_providers()) if self.session else list(self.providers),
            "intra_op_threads": self.intra_op_threads or os.cpu_count(),
        }

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, run_session(self.session, names, feeds)))

    def prepare(self, feeds: Mapping[str, np.ndarray]):
        """Bind inputs once and return a callable running ``session.run`` on them.

        Args:
            feeds: Input name to array.

        Returns:
            Zero-argument callable (the same work as a bare ``session.run`` loop).
        """
        self.check_inputs(feeds)
        sess = self.session
        bound = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        names = [o.name for o in sess.get_outputs()]

        def call() -> list[np.ndarray]:
            try:
                return sess.run(names, bound)
            except Exception as exc:  # the timed loop: one line, as every other run
                raise InputError(explain_run_error(exc, sess, bound)) from exc

        return call
