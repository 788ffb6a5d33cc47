"""The one data format: a NumPy ``.npz`` with one array per model input plus optional ``labels``.

Used by every stage that takes data (prune, fine-tune, calibrate, quantize, bench, gate); the rules
are in ``docs/data-format.md``:

- one array per input, named like the input, **samples on axis 0**, all the same length;
- ``labels`` (aliases ``label``, ``y``): one entry per sample, for fine-tuning and the task metric;
- ``static:<name>``: a per-call constant input (recurrent state, scalar), passed unchanged with
  every call and never cut into batches.

Files are read with ``allow_pickle=False``; every problem is reported in words with the file name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.errors import InputError

#: keys holding labels (the first one present wins)
LABEL_KEYS = ("labels", "label", "y")
#: key prefix of per-call constant inputs
STATIC_PREFIX = "static:"


@dataclass
class Dataset:
    """Arrays read from a ``.npz`` (or built in memory).

    Attributes:
        inputs: Batched inputs, name -> array with samples on axis 0.
        labels: One label (or target array) per sample, or ``None``.
        static: Per-call constant inputs, name -> array (never batched).
        source: File name or description, for messages.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    static: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        lengths = {k: len(v) for k, v in self.inputs.items() if np.ndim(v) > 0}
        scalars = sorted(k for k, v in self.inputs.items() if np.ndim(v) == 0)
        if scalars:
            raise InputError(f"{self.source}: input(s) {scalars} are scalars; store per-call constants as "
                             f"'{STATIC_PREFIX}<name>'")
        if self.labels is not None:
            if np.ndim(self.labels) == 0:
                raise InputError(f"{self.source}: 'labels' is a scalar; store one label per sample (axis 0)")
            lengths["labels"] = len(self.labels)
            _check_finite_labels(self.labels, self.source)
        if len(set(lengths.values())) > 1:
            raise InputError(f"{self.source}: arrays have different numbers of samples on axis 0: {lengths}")
        if not self.inputs:
            raise InputError(f"{self.source}: no input arrays (found only {sorted(self.static) or 'labels'})")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Samples ``idx`` of every batched input, plus the static inputs, as one feed dict."""
        return {**{k: v[idx] for k, v in self.inputs.items()}, **self.static}

    def feeds(self) -> dict[str, np.ndarray]:
        """Every sample as one feed dict (static inputs included)."""
        return {**self.inputs, **self.static}

    def check(self, specs: Sequence[Any], *, need_labels: bool = False, ranges: bool = True) -> Dataset:
        """Check the whole file's arrays against input specs (:class:`~trtopt.inputs.InputSpec`); cast floats.

        Float data is cast to the spec's float type; integer and bool data must match exactly.
        Every message names the file (``source``) and the file's array shape, never a batch's.

        Args:
            specs: One spec per model input.
            need_labels: A ``labels`` array is required.
            ranges: Enforce the declared ``min..max`` of dynamic dims (specs a user declared). ``False``
                for specs read from a graph (:meth:`check_onnx`): a dim the graph leaves dynamic has no
                known range there (``specs_from_onnx`` gives it ``1..1..1``), so any size is accepted,
                and axis 0 of batched inputs always holds samples (a fixed batch is cut into calls).

        Returns:
            ``self``, with float arrays cast in place.

        Raises:
            InputError: A missing or unknown input, wrong dtype, rank or fixed dim, integer values
                outside the spec's value range (token ids beyond the embedding table: checked here, so
                ONNX Runtime never fails on them mid-run), or missing labels.
        """
        names = {s.name for s in specs}
        given = set(self.inputs) | set(self.static)
        missing, unknown = sorted(names - given), sorted(given - names)
        if missing:
            raise InputError(f"{self.source}: no array for input(s) {missing} (the file's arrays {sorted(given)} "
                             f"do not match the model's inputs {sorted(names)}; name each array like its input)")
        if unknown:
            raise InputError(f"{self.source}: array(s) {unknown} are not model inputs (inputs: {sorted(names)}; "
                             f"labels go in 'labels')")
        for s in specs:
            static = s.name in self.static
            arr = self.static[s.name] if static else self.inputs[s.name]
            arr = _cast(arr, s, self.source)
            want = _dims_text(s.dims, ranges)
            if arr.ndim != len(s.dims):
                raise InputError(f"{self.source}: '{s.name}' has shape {list(arr.shape)} (rank {arr.ndim}); the "
                                 f"model input is {want or 'a scalar'} (rank {len(s.dims)})")
            for ax, (d, n) in enumerate(zip(s.dims, arr.shape)):
                if ax == 0 and not static and (d.dynamic or not ranges):
                    continue  # samples on axis 0
                if not d.dynamic and n != d.opt:
                    raise InputError(f"{self.source}: '{s.name}' has size {n} on axis {ax}; the model fixes it "
                                     f"to {d.opt} (shape {list(arr.shape)} vs {want})")
                if ranges and d.dynamic and not d.min <= n <= d.max:
                    raise InputError(f"{self.source}: '{s.name}' has size {n} on axis {ax}, outside the declared "
                                     f"range {d.min}..{d.max} (shape {list(arr.shape)})")
            _check_values(arr, s, self.source, declared=ranges)
            (self.static if static else self.inputs)[s.name] = arr
        if need_labels and self.labels is None:
            raise InputError(f"{self.source}: no 'labels' array (needed here: one label per sample)")
        return self

    def check_onnx(self, model: Any, *, need_labels: bool = False) -> Dataset:
        """Check the whole file against an ONNX model's inputs before the first batch (see :meth:`check`).

        The graph gives names, dtypes, ranks and fixed dims (:func:`trtopt.inputs.specs_from_onnx`);
        dims it leaves dynamic accept any size. A model with an input dtype trtopt does not declare
        (uint8, float64, ...) is left to the per-batch checks of the stage.

        Args:
            model: ``.onnx`` path (read without external-data weights) or ``onnx.ModelProto``.
            need_labels: A ``labels`` array is required.

        Returns:
            ``self``, with float arrays cast to the model's float types.

        Raises:
            InputError: The data cannot feed the model (names, dtype, rank, fixed dims), naming the file.
        """
        from trtopt.inputs import specs_from_onnx

        if not hasattr(model, "graph"):
            from trtopt.onnx.io import load_graph_only

            model = load_graph_only(model)
        try:
            specs = specs_from_onnx(model)
        except InputError:  # an input dtype outside trtopt.inputs.DTYPES: per-batch checks handle it
            return self
        return self.check(specs, need_labels=need_labels, ranges=False)


def _dims_text(dims: Sequence[Any], ranges: bool) -> str:
    """``Nx1x8x8``-style text of spec dims; graph dims (``ranges=False``) show a dynamic dim by name."""
    if ranges:
        return "x".join(map(str, dims))
    return "x".join(str(d.opt) if not d.dynamic else (d.name or "?") for d in dims)


def _check_finite_labels(labels: Any, source: str) -> None:
    """Raise naming ``source`` when float labels hold NaN/Inf (a NaN label never matches: accuracy 0, silently)."""
    arr = np.asarray(labels)
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise InputError(f"{source}: 'labels' holds {bad} NaN/Inf value(s) of {arr.size}; every label must be "
                             "a finite number")


def _check_values(arr: np.ndarray, spec: Any, source: str, declared: bool) -> None:
    """Integer data inside the spec's value range ``low..high`` (``high`` excluded, as token ids below the vocabulary).

    A graph's spec (``declared=False``) carries a range only for an embedding's index (its rows) and,
    as a guess for random feeds, ``0..2`` for an input named like a mask: the guess is not enforced.
    """
    from trtopt.inputs import guessed_mask_range

    if spec.low is None or not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        return
    if not declared and guessed_mask_range(spec):
        return
    why = f"declared {spec}" if declared else f"the model's embedding table has {int(spec.high)} rows"
    lo, hi = int(arr.min()), int(arr.max())
    if hi >= spec.high:
        raise InputError(f"{source}: '{spec.name}' holds values up to {hi}; they must be below {int(spec.high)} "
                         f"({why})")
    if lo < spec.low:
        raise InputError(f"{source}: '{spec.name}' holds values down to {lo}; they must be at least {int(spec.low)} "
                         f"({why})")


def _cast(arr: np.ndarray, spec: Any, source: str) -> np.ndarray:
    want = np.dtype(spec.np_dtype)
    if arr.dtype == want:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating):
        return arr.astype(want)
    raise InputError(f"{source}: '{spec.name}' is {arr.dtype}; the model input is {want} "
                     f"(save it with .astype(np.{want}))")


def load_npz(path: str | os.PathLike[str], static: Sequence[str] = ()) -> Dataset:
    """Read a data ``.npz``.

    Args:
        path: The file (``np.savez`` / ``np.savez_compressed``).
        static: Input names to treat as per-call constants even without the ``static:`` prefix.

    Returns:
        The dataset (not yet checked against a model: see :meth:`Dataset.check`).

    Raises:
        InputError: Missing file, a folder, not an ``.npz``, pickled objects, no inputs, different
            sample counts.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"data file {p} is a directory, not a .npz file")
    if not p.is_file():
        raise InputError(f"data file not found: {p}")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise InputError(f"cannot read data file {p} ({exc.strerror or exc})") from None
    if magic.startswith(b"\x93NUMPY"):
        raise InputError(f"{p} holds a single array, not a .npz archive: save it with "
                         f"np.savez('{p.stem}.npz', <input name>=array, labels=...)")
    if not magic.startswith(b"PK"):  # an .npz is a zip archive
        raise InputError(f"{p} is not a readable .npz archive (not a zip file: write it with np.savez)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        msg = "holds pickled Python objects (object arrays)" if "pickle" in str(exc) else str(exc)
        raise InputError(f"{p}: cannot read it as .npz: {msg}; store plain numeric arrays") from None
    except Exception as exc:  # OSError, EOFError, zipfile.BadZipFile on a truncated or corrupt archive
        why = str(exc).splitlines()[0] if str(exc) else "corrupt"
        raise InputError(f"{p} is not a readable .npz archive ({why})") from None
    label_key = next((k for k in LABEL_KEYS if k in arrays), None)
    labels = arrays.pop(label_key) if label_key else None
    stat = {k[len(STATIC_PREFIX):]: arrays.pop(k) for k in list(arrays) if k.startswith(STATIC_PREFIX)}
    for k in static:
        if k in arrays:
            stat[k] = arrays.pop(k)
        elif k not in stat:
            raise InputError(f"{p}: --static-input '{k}' is not an array in the file (arrays: {sorted(arrays)})")
    for k in LABEL_KEYS:
        arrays.pop(k, None)
    return Dataset(inputs=arrays, labels=labels, static=stat, source=p.name)


def save_npz(path: str | os.PathLike[str], inputs: Mapping[str, np.ndarray], labels: np.ndarray | None = None,
             static: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a data ``.npz`` in the format :func:`load_npz` reads (atomically).

    Returns:
        The written path.
    """
    from trtopt.fileio import atomic_path

    arrays = {**inputs, **{f"{STATIC_PREFIX}{k}": v for k, v in (static or {}).items()}}
    if labels is not None:
        arrays["labels"] = labels
    Dataset(inputs=dict(inputs), labels=labels, static=dict(static or {}), source=str(path))  # validate first
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)
