"""Calibration batches: validated, hashed, cut into runtime calls, static inputs added.

Shared by the ONNX Runtime and torch collectors so that the same data gives the same hash,
the same calls and the same errors. Everything that can be checked without running the model
(input names, ranks, fixed dims, dtypes, static inputs) is checked before the first call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx

from trtopt.calib.config import CalibrationConfig
from trtopt.calib.source import batch_axes, check_inputs, validate_batch
from trtopt.errors import InputError


def _split(batch: dict[str, np.ndarray], fixed: int | None, chunk: int) -> list[dict[str, np.ndarray]]:
    """Cut a batch to the model's static batch size, or into chunks of at most ``chunk`` samples."""
    n = next(iter(batch.values())).shape[0]
    if fixed:
        if n % fixed:
            raise InputError(f"model has a fixed batch size {fixed}; calibration batch of {n} is not a multiple")
        size = fixed
    else:
        size = chunk if 0 < chunk < n else n
    if size == n:
        return [batch]
    return [{k: v[s : s + size] for k, v in batch.items()} for s in range(0, n, size)]


def iter_batches(source: Iterable[dict[str, np.ndarray]], specs: dict, config: CalibrationConfig, digest: Any,
                 model: onnx.ModelProto | None = None) -> Iterator[tuple[int, list[dict[str, np.ndarray]]]]:
    """Validated batches, hashed into ``digest`` and cut into runtime calls, up to ``max_samples``.

    Shared by both collectors so that the same data gives the same hash and the same calls.
    Static inputs (``source.static_inputs``: per-call constants such as a recurrent state) are
    checked against the model before the first call, hashed once, and added to every call
    (broadcast along the batch dim where they have size 1 there, see :func:`batch_axes`).

    Yields:
        ``(samples in the batch, sub-batches at the model's static batch size or run_batch_size)``.

    Raises:
        InputError: Data that cannot feed the model (names, ranks, fixed dims, dtypes, NaN/Inf).
    """
    static = {k: np.asarray(v) for k, v in (getattr(source, "static_inputs", None) or {}).items()}
    batched_specs = {k: v for k, v in specs.items() if k not in static}
    first_dims = next(iter(batched_specs.values()))[0] if batched_specs else ()
    fixed = first_dims[0] if first_dims else None  # a static batch dim: split batches to match it
    axes = batch_axes(model, static) if model is not None else {}
    for k in sorted(static):
        digest.update(f"static:{k}".encode())
        digest.update(memoryview(np.ascontiguousarray(static[k])).cast("B"))
    seen = 0
    checked = False
    for raw in source:
        batch = validate_batch(raw, specs, static=static)
        if not checked:  # before the first call: everything that can be checked without running
            check_inputs(specs, batch, static)
            static = {k: _cast_like(v, specs[k][1]) for k, v in static.items()}
            checked = True
        if config.max_samples and seen >= config.max_samples:
            break
        for k in sorted(batch):
            digest.update(k.encode())
            digest.update(memoryview(np.ascontiguousarray(batch[k])).cast("B"))
        n = next(iter(batch.values())).shape[0]
        subs = _split(batch, fixed, config.run_batch_size)
        if static:
            subs = [{**sub, **_with_batch(static, axes, next(iter(sub.values())).shape[0])} for sub in subs]
        yield n, subs
        seen += n


def run_session(sess: Any, wanted: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``sess.run`` with a runtime failure turned into one :class:`InputError` line."""
    try:
        return sess.run(wanted, feed)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
        raise InputError(f"ONNX Runtime could not run the model on the calibration data ({shapes}): {first}") from None


def _cast_like(arr: np.ndarray, dtype: Any) -> np.ndarray:
    return arr.astype(dtype) if dtype is not None and arr.dtype != dtype else arr


def _with_batch(static: dict[str, np.ndarray], axes: dict[str, tuple[int, ...]], n: int) -> dict[str, np.ndarray]:
    """Static arrays with their size-1 batch axes broadcast to ``n`` samples."""
    out = {}
    for k, v in static.items():
        shape = list(v.shape)
        for ax in axes.get(k, ()):
            if shape[ax] == 1:
                shape[ax] = n
        out[k] = v if tuple(shape) == v.shape else np.ascontiguousarray(np.broadcast_to(v, shape))
    return out
