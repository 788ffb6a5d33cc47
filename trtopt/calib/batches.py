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

from trtopt.batching import batch_rule
from trtopt.calib.config import CalibrationConfig
from trtopt.calib.source import batch_axes, check_inputs, validate_batch
from trtopt.onnx.exec import run_session as exec_run_session


def iter_batches(source: Iterable[dict[str, np.ndarray]], specs: dict, config: CalibrationConfig, digest: Any,
                 model: onnx.ModelProto | None = None) -> Iterator[tuple[int, list[dict[str, np.ndarray]]]]:
    """Validated batches, hashed into ``digest`` and cut into runtime calls, up to ``max_samples``.

    Shared by both collectors so that the same data gives the same hash and the same calls.
    Calls follow the one batching rule (:mod:`trtopt.batching`): ``run_batch_size`` samples, or
    exactly the model's fixed batch size, whatever the source's batch size (samples short of a
    full call wait for the next batch; the last few form one call padded with repeats of them).
    Static inputs (``source.static_inputs``: per-call constants such as a recurrent state) are
    checked against the model before the first call, hashed once, and added to every call
    (broadcast along the batch dim where they have size 1 there, see :func:`batch_axes`).

    Yields:
        ``(samples in the batch, runtime calls)``; a last ``(0, calls)`` for the samples of a
        fixed-batch model left over at the end.

    Raises:
        InputError: Data that cannot feed the model (names, ranks, fixed dims, dtypes, NaN/Inf).
    """
    static = {k: np.asarray(v) for k, v in (getattr(source, "static_inputs", None) or {}).items()}
    for k in sorted(static):
        digest.update(f"static:{k}".encode())
        digest.update(memoryview(np.ascontiguousarray(static[k])).cast("B"))
    seen = 0
    checked = False
    rest: dict[str, np.ndarray] = {}  # a fixed batch: samples short of a full call wait for the next batch
    for raw in source:
        batch = validate_batch(raw, specs, static=static)
        if not checked:  # before the first call: everything that can be checked without running
            check_inputs(specs, batch, static)
            static = {k: _cast_like(v, specs[k][1]) for k, v in static.items()}
            rule = batch_rule({k: v[0] for k, v in specs.items()}, static,
                              batch_axes(model, static) if model is not None else None)
            checked = True
        if config.max_samples and seen >= config.max_samples:
            break
        for k in sorted(batch):
            digest.update(k.encode())
            digest.update(memoryview(np.ascontiguousarray(batch[k])).cast("B"))
        n = next(iter(batch.values())).shape[0]
        if rule.fixed:
            batch = {k: np.concatenate([rest[k], v]) if rest else v for k, v in batch.items()}
            full = len(next(iter(batch.values()))) // rule.fixed * rule.fixed
            rest = {k: v[full:] for k, v in batch.items()} if full < len(next(iter(batch.values()))) else {}
            batch = {k: v[:full] for k, v in batch.items()}
        subs = [sub for sub, _ in rule.calls({**batch, **static}, config.run_batch_size)] if _count(batch) else []
        yield n, subs
        seen += n
    if rest:  # the last samples of a fixed-batch model: one call, padded with repeats of them
        yield 0, [sub for sub, _ in rule.calls({**rest, **static}, rule.fixed or 0)]


def _count(batch: dict[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def run_session(sess: Any, wanted: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``sess.run`` with a failure as one :class:`InputError` line (:func:`trtopt.onnx.exec.run_session`)."""
    return exec_run_session(sess, wanted, feed, "the model on the calibration data")


def _cast_like(arr: np.ndarray, dtype: Any) -> np.ndarray:
    return arr.astype(dtype) if dtype is not None and arr.dtype != dtype else arr
