"""ONNX Runtime runner: the embedded CPU default and the numeric reference.

Also used to collect calibration statistics and layer-wise comparisons, through
:func:`load_session` which can expose intermediate tensors as extra outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.backends.base import Runner, TensorSpec
from trtopt.errors import InputError
from trtopt.optional import require

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def make_session(
    model: str | os.PathLike[str] | bytes,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_threads: int = 0,
    optimize: bool = True,
):  # -> onnxruntime.InferenceSession (untyped to keep the import lazy)
    """Create an ONNX Runtime session with a clear error for unreadable models.

    Args:
        model: Path to an ``.onnx`` file or serialized model bytes.
        providers: Execution providers in priority order.
        intra_op_threads: Threads per op; 0 lets ONNX Runtime decide.
        optimize: Apply ONNX Runtime's graph optimizations (disable for calibration so
            tensor names stay those of the exported graph).

    Returns:
        An ``onnxruntime.InferenceSession``.

    Raises:
        InputError: The file is missing or is not a model ONNX Runtime can load.
    """
    ort = require("onnxruntime")
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise InputError(f"model file {path} is a directory" if path.is_dir() else f"model file not found: {path}")
        model = str(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.log_severity_level = 4  # fatal only: a failing run raises, and trtopt says it in one line (no raw log)
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=chosen)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        name = model if isinstance(model, str) else "<bytes>"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ONNX Runtime cannot load {name}: {first}") from exc


def run_session(sess: Any, names: Sequence[str] | None, feeds: Mapping[str, np.ndarray],
                what: str = "the model") -> list[np.ndarray]:
    """``sess.run(names, feeds)`` with any ONNX Runtime failure turned into one :class:`InputError` line.

    This is the one place trtopt runs an ONNX Runtime session on data: the line names the input that
    was refused, its shape, what the model expects and the fix (see :func:`explain_run_error`), never
    ONNX Runtime's multi-line dump.

    Args:
        sess: An ``onnxruntime.InferenceSession``.
        names: Outputs to fetch (``None``: all).
        feeds: Input name -> array.
        what: What was being run, for the message (``"the INT8 model on the calibration data"``).

    Raises:
        InputError: ONNX Runtime refused the inputs or failed in a node.
    """
    try:
        return sess.run(None if names is None else list(names), dict(feeds))
    except Exception as exc:  # onnxruntime raises its own types (InvalidArgument, Fail, RuntimeException, ...)
        raise InputError(explain_run_error(exc, sess, feeds, what)) from exc


_ORT_NAMES = {v: k.removeprefix("tensor(").removesuffix(")") for k, v in _ORT_TYPES.items()}


def _shape(feeds: Mapping[str, np.ndarray], name: str) -> str:
    return str(list(np.shape(feeds[name]))) if name in feeds else "?"


def explain_run_error(exc: BaseException, sess: Any, feeds: Mapping[str, np.ndarray], what: str = "the model") -> str:
    """One line for an ONNX Runtime run failure: the input or node, shapes, what the model expects, the fix."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    head = f"ONNX Runtime could not run {what}"
    if m := re.search(r"invalid dimensions for input: (\S+) for the following indices index: (\d+) Got: (\d+) "
                      r"Expected: (\d+)", text):
        name, ax, got, want = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if ax == 0:
            return (f"{head}: input '{name}' {_shape(feeds, name)} has {got} on axis 0, where the model has a fixed "
                    f"size {want}; an input that is not samples on axis 0 goes in the .npz as 'static:{name}' "
                    "(passed whole with every call), or export the model with a dynamic batch")
        return (f"{head}: input '{name}' {_shape(feeds, name)} has {got} on axis {ax}, the model expects {want} "
                "there; give data of that size or export the model with a dynamic dim there")
    if m := re.search(r"Invalid rank for input: (\S+) Got: (\d+) Expected: (\d+)", text):
        name = m.group(1)
        return (f"{head}: input '{name}' {_shape(feeds, name)} has rank {m.group(2)}, the model expects rank "
                f"{m.group(3)}; give data of the model's rank (`trtopt doctor MODEL.onnx` shows its inputs)")
    if m := re.search(r"Unexpected input data type\. Actual: \(tensor\((\w+)\)\) , expected: \(tensor\((\w+)\)\)",
                      text):
        got, want = m.group(1), m.group(2)
        wanted = {i.name: i.type for i in _safe_inputs(sess)}
        names = [k for k, v in feeds.items() if wanted.get(k) == f"tensor({want})"
                 and _ORT_NAMES.get(np.asarray(v).dtype.type) != want] or ["?"]
        return (f"{head}: input '{names[0]}' has dtype {got}, the model expects {want}; store the data as "
                f"{want} in the .npz")
    if m := re.search(r"Required inputs \((\[[^\]]*\])\) are missing from input feed \((\[[^\]]*\])\)", text):
        return (f"{head}: the data lacks input(s) {m.group(1)} (given: {m.group(2)}); name the .npz arrays after "
                "the model's inputs (`trtopt doctor MODEL.onnx` lists them)")
    if m := re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text):
        shapes = ", ".join(f"{k} {_shape(feeds, k)}" for k in feeds)
        status = re.sub(r"^\S+\.(?:h|cc|cpp):\d+ [\w:~<>]+\([^)]*\) ", "", m.group(3))  # ORT's source location
        return (f"{head}: node '{m.group(2)}' ({m.group(1)}) failed on inputs {shapes}: {status[:300]}; check "
                "the data's shapes against the model's inputs (`trtopt doctor MODEL.onnx`); a graph that computes "
                "with the batch size it was exported with (a Reshape to a constant shape) runs on no other: export "
                "it with that batch size as a fixed input dim (trtopt then runs calls of that size) or dynamic")
    shapes = ", ".join(f"{k} {_shape(feeds, k)}" for k in feeds)
    return f"{head} on inputs {shapes}: {text[:300] or type(exc).__name__}"


def _safe_inputs(sess: Any) -> list[Any]:
    try:
        return list(sess.get_inputs())
    except Exception:  # a session that cannot describe itself: the message names no input
        return []


class OnnxRuntimeRunner(Runner):
    """Run an ONNX model with ONNX Runtime.

    A model file is first opened in a helper process (:func:`trtopt.backends.ort_probe.probe_load`):
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
            from trtopt.backends.ort_probe import probe_load

            if Path(self.model).is_file() and (failure := probe_load(self.model)) is not None:
                raise InputError(f"ONNX Runtime cannot load {self.model}: {failure}")
        self.session = make_session(self.model, self.providers, self.intra_op_threads)

    def _deactivate(self) -> None:
        self.session = None

    @staticmethod
    def _specs(args) -> list[TensorSpec]:
        out = []
        for a in args:
            if a.type not in _ORT_TYPES:
                raise InputError(f"tensor '{a.name}' has unsupported type {a.type}")
            shape = tuple(d if isinstance(d, int) else None for d in a.shape)
            out.append(TensorSpec(a.name, shape, np.dtype(_ORT_TYPES[a.type])))
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
