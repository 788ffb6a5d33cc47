"""Running a model in ONNX Runtime: sessions, one-line run errors, exposed intermediates, batched predict.

Every stage that runs an ONNX graph on data goes through here: calibration, the FP16 overflow
preview, the layer-wise comparison, the fidelity guard and the accuracy budget, and the ONNX
Runtime runner of ``bench``. Intermediate tensors are read by adding them as graph outputs
(:func:`exposed_outputs`): ONNX Runtime's optimizers never rename or fuse away a graph output.
Samples on axis 0 are cut into calls by the one batching rule (:mod:`trtopt.batching`).

``onnxruntime`` is imported on first use, never at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtopt.batching import rule_for_onnx
from trtopt.errors import InputError
from trtopt.onnx.dims import with_symbolic_dims
from trtopt.onnx.io import first_error_line
from trtopt.optional import require

#: ONNX Runtime's type strings -> numpy dtypes (the types trtopt feeds and reads).
ORT_TYPES = {
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
    prepack: bool = True,
    external_dir: str | os.PathLike[str] | None = None,
):  # -> onnxruntime.InferenceSession (untyped to keep the import lazy)
    """Create an ONNX Runtime session with a clear error for unreadable models.

    Args:
        model: Path to an ``.onnx`` file or serialized model bytes.
        providers: Execution providers in priority order.
        intra_op_threads: Threads per op; 0 lets ONNX Runtime decide.
        optimize: Apply ONNX Runtime's graph optimizations (disable for calibration so
            tensor names stay those of the exported graph).
        prepack: Let ONNX Runtime pre-pack constant MatMul/Conv weights (faster kernels, but a second
            copy of every such weight in memory: turned off for multi-GB models).
        external_dir: Folder of the external data that serialized ``model`` bytes point at (their
            ``location`` entries are relative to it): ONNX Runtime memory-maps the weights from there,
            so a graph-only proto of a multi-GB model opens without any copy of its weights.

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
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    if external_dir is not None:
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_dir))
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=chosen)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        name = model if isinstance(model, str) else "<bytes>"
        raise InputError(f"ONNX Runtime cannot load {name}: {first_error_line(exc)}") from exc

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

_ORT_NAMES = {v: k.removeprefix("tensor(").removesuffix(")") for k, v in ORT_TYPES.items()}

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

def exposed_outputs(model: onnx.ModelProto, names: Sequence[str],
                    types: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """A ModelProto holding only the ``graph.output`` entries that expose ``names`` (existing outputs skipped).

    Protobuf parsing merges concatenated messages (repeated fields are appended), so
    ``model.SerializeToString() + exposed_outputs(...).SerializeToString()`` *is* the model with the
    extra outputs: no copy and no second serialization of the weights (:func:`exposed_bytes`).

    Args:
        model: The model.
        names: Tensors to expose, in order (duplicates are exposed once).
        types: ONNX element type per tensor; a tensor without one is exposed untyped (ONNX Runtime
            infers it). ``None`` exposes every tensor untyped.
    """
    have = {o.name for o in model.graph.output}
    extra = onnx.ModelProto()
    for n in dict.fromkeys(names):
        if n in have:
            continue
        elem = (types or {}).get(n)
        extra.graph.output.append(onnx.helper.make_tensor_value_info(n, elem, None) if elem
                                  else onnx.ValueInfoProto(name=n))
    return extra

def exposed_bytes(model: onnx.ModelProto, names: Sequence[str], types: Mapping[str, int] | None = None,
                  serialized: bytes | None = None) -> bytes:
    """Serialized ``model`` with ``names`` added as graph outputs (see :func:`exposed_outputs`).

    Args:
        model: The model (not modified); must fit protobuf's 2 GB limit.
        names: Tensors to expose.
        types: Element types, as for :func:`exposed_outputs`.
        serialized: ``model.SerializeToString()`` when the caller already has it.
    """
    raw = model.SerializeToString() if serialized is None else serialized
    return raw + exposed_outputs(model, names, types).SerializeToString()

def predict(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray], batch_size: int,
            static: Collection[str] = (), what: str = "the model",
            outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` (full graph optimization) on every sample of ``inputs``: output name -> all samples.

    Calls follow the one batching rule (:mod:`trtopt.batching`): ``batch_size`` samples per call, or
    the model's fixed batch size; ``static`` inputs (per-call constants, docs/data-format.md) go with
    every call. Graph dims stored as ``0`` / ``-1`` are read as named dims first (ONNX Runtime would
    take a 0 literally).

    Args:
        model: The model (not modified).
        inputs: Input name -> array, samples on axis 0.
        batch_size: Samples per call (``<= 0``: all in one call), unless the model fixes it.
        static: Inputs of ``inputs`` that are per-call constants.
        what: What is being run, for error messages.
        outputs: Outputs to fetch (``None``: all, in graph order).

    Returns:
        Output name -> array over all samples, in the order fetched.

    Raises:
        InputError: ONNX Runtime refused the model or the inputs (one line naming the input and the fix).
    """
    model = with_symbolic_dims(model)
    sess = make_session(model.SerializeToString())
    names = [o.name for o in sess.get_outputs()] if outputs is None else list(outputs)
    rule = rule_for_onnx(model, static)
    outs = rule.run(lambda feed: dict(zip(names, run_session(sess, names, feed, what))), inputs, batch_size)
    return {k: outs[k] for k in names}
