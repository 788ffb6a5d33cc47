"""Calibration sources: rewindable iterables of ``{input name: ndarray}`` batches.

Every source iterates in a deterministic order (a seeded permutation), can be iterated
again from the start (calibration and the FP16 data rule each make a pass), and rejects
NaN/Inf naming the offending input. :func:`validate_batch` checks a batch against the
model's input specs (names, ranks, static dims, dtypes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trtopt.errors import ConfigError, InputError
from trtopt.onnx.dims import graph_inputs


class CalibrationSource(Protocol):
    """A rewindable iterable of ``{input name: ndarray}`` batches (each ``iter()`` restarts)."""

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...


def check_finite(name: str, arr: np.ndarray, where: str = "calibration data") -> None:
    """Raise :class:`InputError` naming ``name`` if ``arr`` holds NaN or Inf."""
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{where}: input '{name}' contains {bad} NaN/Inf value(s)")


#: Key prefix marking a per-call constant (non-batched) input in a calibration ``.npz``.
STATIC_PREFIX = "static:"


class NumpySource:
    """Batches from in-memory arrays (samples on axis 0), in a seeded order.

    Inputs that are not samples on axis 0 (a recurrent state ``[1, 1, 128]`` or ``[2, N, 128]``, a
    scalar sample rate) are given in ``static``: the same array goes with every runtime call. A size-1
    axis of a static array where the model's dim is the batch dim (the same ``dim_param`` as axis 0
    of the batched inputs) is broadcast to each call's batch size.

    Args:
        arrays: Input name -> array; all arrays must have the same length on axis 0.
        batch_size: Samples per batch (the last batch may be smaller).
        seed: Seed of the sample permutation; ``None`` keeps the stored order.
        max_samples: Use only the first ``max_samples`` samples of the permutation (0 = all).
        static: Input name -> array passed unchanged with every call (not batched, not shuffled).
        source: Where the arrays came from (a file name), named in error messages.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int = 32, seed: int | None = 0,
                 max_samples: int = 0, static: Mapping[str, np.ndarray] | None = None,
                 source: str = "calibration data") -> None:
        if not arrays:
            raise InputError("calibration data holds no batched arrays" if static else
                             "calibration data holds no arrays")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.static_inputs = {k: np.asarray(v) for k, v in (static or {}).items()}
        both = sorted(set(self.static_inputs) & set(arrays))
        if both:
            raise InputError(f"calibration data gives input(s) {both} both batched and as '{STATIC_PREFIX}' arrays")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        scalars = [k for k, v in self.arrays.items() if v.ndim == 0]
        if scalars:
            raise InputError(f"calibration array(s) {scalars} are scalars, not samples on axis 0: store them as "
                             f"'{STATIC_PREFIX}<name>' to pass them unchanged with every call")
        lengths = {k: v.shape[0] for k, v in self.arrays.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"calibration arrays differ in sample count (axis 0): {lengths}; inputs that are not "
                             f"samples on axis 0 go in the .npz as '{STATIC_PREFIX}<name>'")
        self.num_samples = next(iter(lengths.values()))
        if self.num_samples == 0:
            raise InputError("calibration data holds no samples")
        for k, v in {**self.arrays, **self.static_inputs}.items():
            check_finite(k, v, source)
        order = np.arange(self.num_samples)
        if seed is not None:
            order = np.random.default_rng(seed).permutation(self.num_samples)
        if max_samples:
            order = order[:max_samples]
            self.num_samples = len(order)
        self.order = order
        self.batch_size = batch_size

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str], batch_size: int = 32, seed: int | None = 0,
                 max_samples: int = 0, exclude: Sequence[str] = (), static: Sequence[str] = (),
                 model: Any = None) -> NumpySource:
        """Load a ``.npz`` in the one data format (:func:`trtopt.dataset.load_npz`, docs/data-format.md).

        ``labels`` (``label``, ``y``) are dropped; ``exclude`` drops more arrays. Arrays named
        ``static:<input>`` (or named in ``static``) are per-call constants: passed unchanged with
        every call instead of being cut into batches on axis 0. With ``model`` (an ``.onnx`` path or
        ModelProto) the whole file is checked against the model's inputs first
        (:meth:`trtopt.dataset.Dataset.check_onnx`), so a wrong array is reported with the file's
        name and shape instead of a batch's.

        Raises:
            InputError: Missing file, a folder, not an ``.npz``, pickled arrays, no inputs, different
                sample counts, a ``static`` name not in the file, data that cannot feed ``model``.
        """
        from trtopt.dataset import Dataset, load_npz

        ds = load_npz(path, static=tuple(static))  # the one data format: errors in words naming the file
        batched = {k: v for k, v in ds.inputs.items() if k not in exclude}
        fixed = {k: v for k, v in ds.static.items() if k not in exclude}
        if model is not None and batched:
            ds = Dataset(batched, static=fixed, source=ds.source).check_onnx(model)
            batched, fixed = ds.inputs, ds.static
        return cls(batched, batch_size=batch_size, seed=seed, max_samples=max_samples, static=fixed, source=ds.source)

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, self.num_samples, self.batch_size):
            idx = self.order[s : s + self.batch_size]
            yield {k: np.ascontiguousarray(v[idx]) for k, v in self.arrays.items()}


class TorchSource:
    """Batches from a ``torch.utils.data.DataLoader`` (or any re-iterable of tensors).

    Each item may be a tensor (single-input model), a tuple/list whose leading elements map
    to ``input_names`` in order (trailing labels are ignored), or a dict keyed by input name.
    Order is the loader's: pass a loader with ``shuffle=False`` or a seeded ``generator``;
    ``seed`` here reseeds ``torch`` before each pass so a shuffling loader repeats its order.

    Args:
        loader: The data loader.
        input_names: Model input names, in the order items provide them.
        seed: Seed applied with ``torch.manual_seed`` at the start of every pass (None: untouched).
        max_batches: Stop after this many batches (0 = all).
    """

    def __init__(self, loader: Iterable[Any], input_names: Sequence[str], seed: int | None = 0,
                 max_batches: int = 0) -> None:
        if not input_names:
            raise ConfigError("TorchSource needs at least one input name")
        self.loader, self.input_names, self.seed, self.max_batches = loader, tuple(input_names), seed, max_batches

    def _to_dict(self, item: Any) -> dict[str, np.ndarray]:
        if isinstance(item, Mapping):
            out = {k: item[k] for k in self.input_names if k in item}
            missing = [k for k in self.input_names if k not in item]
            if missing:
                raise InputError(f"data loader batch lacks input(s) {missing}")
        elif isinstance(item, (tuple, list)):
            out = dict(zip(self.input_names, item[: len(self.input_names)]))
        else:
            out = {self.input_names[0]: item}
        res = {}
        for k, v in out.items():
            arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            check_finite(k, arr)
            res[k] = arr
        return res

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.seed is not None:
            import torch

            torch.manual_seed(self.seed)
        for n, item in enumerate(self.loader):
            if self.max_batches and n >= self.max_batches:
                return
            yield self._to_dict(item)


@dataclass(frozen=True)
class PreprocessSpec:
    """Image preprocessing for :class:`ImageFolderSource` (torchvision ImageNet defaults).

    Attributes:
        size: Final ``(height, width)`` after the centre crop.
        resize_shorter: Resize the shorter side to this before cropping (0 = resize straight to ``size``).
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel std divided by.
        layout: ``NCHW`` or ``NHWC``.
        grayscale: Convert to one channel instead of RGB.
    """

    size: tuple[int, int] = (224, 224)
    resize_shorter: int = 256
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"layout must be NCHW or NHWC, got '{self.layout}'")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError("mean and std must have the same length and std must be positive")


_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


class ImageFolderSource:
    """Batches of preprocessed images found (recursively) under a folder, in a seeded order.

    Args:
        folder: Folder holding image files.
        input_name: Model input to feed.
        spec: Preprocessing.
        batch_size: Images per batch.
        seed: Seed of the file permutation (None: sorted path order).
        max_samples: Use at most this many images (0 = all).
    """

    def __init__(self, folder: str | os.PathLike[str], input_name: str, spec: PreprocessSpec | None = None,
                 batch_size: int = 32, seed: int | None = 0, max_samples: int = 0) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"image folder not found: {root}")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise InputError(f"no images ({', '.join(sorted(_IMAGE_EXT))}) under {root}")
        if seed is not None:
            files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
        self.files = files[:max_samples] if max_samples else files
        self.input_name, self.spec, self.batch_size = input_name, spec or PreprocessSpec(), batch_size

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image

        s = self.spec
        try:
            img = Image.open(path).convert("L" if s.grayscale else "RGB")
        except Exception as exc:
            raise InputError(f"cannot read image {path} ({type(exc).__name__})") from exc
        h, w = s.size
        if s.resize_shorter:
            k = s.resize_shorter / min(img.size)
            img = img.resize((max(w, round(img.size[0] * k)), max(h, round(img.size[1] * k))), Image.BILINEAR)
            left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
            img = img.crop((left, top, left + w, top + h))
        else:
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        arr = (arr - np.asarray(s.mean, np.float32)) / np.asarray(s.std, np.float32)
        return arr.transpose(2, 0, 1) if s.layout == "NCHW" else arr

    def __len__(self) -> int:
        return (len(self.files) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, len(self.files), self.batch_size):
            batch = np.stack([self._load(p) for p in self.files[s : s + self.batch_size]]).astype(np.float32)
            yield {self.input_name: batch}


def workload_source(workload: Any, batch_size: int = 32, seed: int | None = 0) -> NumpySource:
    """Source over a recipe workload's calibration split (``workload.input_name``, ``workload.calib``)."""
    return NumpySource({workload.input_name: workload.calib}, batch_size=batch_size, seed=seed)


_NP_OF_ONNX = {1: np.float32, 10: np.float16, 11: np.float64, 7: np.int64, 6: np.int32, 3: np.int8, 2: np.uint8,
               9: np.bool_}


def model_input_specs(model: Any) -> dict[str, tuple[tuple[int | None, ...], Any]]:
    """``{name: (shape with None for dynamic dims, numpy dtype)}`` of an ONNX model's real inputs.

    A dim is dynamic when it has a ``dim_param``, no value, or a ``dim_value`` of -1 or 0
    (:func:`trtopt.onnx.dims.is_dynamic_dim`).
    """
    return {gi.name: (gi.dims, _NP_OF_ONNX.get(gi.elem_type)) for gi in graph_inputs(model)}


def batch_axes(model: Any, static: Iterable[str] = ()) -> dict[str, tuple[int, ...]]:
    """Axes of each ``static`` input whose dim is the batch dim (same ``dim_param`` as the batched inputs' axis 0)."""
    vis = {gi.name: gi for gi in graph_inputs(model)}
    static = set(static)
    symbols = {gi.dim_names[0] for k, gi in vis.items() if k not in static and gi.dim_names}
    symbols.discard(None)
    return {k: tuple(ax for ax, p in enumerate(vis[k].dim_names) if p in symbols) for k in static if k in vis}


def check_inputs(specs: Mapping[str, tuple], batched: Mapping[str, np.ndarray], static: Mapping[str, np.ndarray],
                 where: str = "calibration data") -> None:
    """Check, before anything runs, that batched and static inputs can feed the model.

    Batched inputs carry samples on axis 0, so their axis-0 dims must be all dynamic or all the
    same fixed size (then batches are cut to it); a batched input with a fixed axis 0 next to
    dynamic ones (a recurrent state ``[1, 1, 128]``) must be static. Static inputs must match
    the model's rank, fixed dims and dtype as they are.

    Raises:
        InputError: With the fix (``static:<name>`` in the ``.npz``) where one applies.
    """
    fixed = {k: specs[k][0][0] for k in batched if k in specs and specs[k][0]}
    sizes = set(fixed.values())
    if len(sizes) > 1:
        pinned = sorted(k for k, v in fixed.items() if v is not None)
        raise InputError(f"{where}: input(s) {pinned} have a fixed first dim in the model "
                         f"({', '.join(f'{k} {list(specs[k][0])}' for k in pinned)}) while other inputs are batched "
                         f"on axis 0; store per-call constant inputs in the .npz as '{STATIC_PREFIX}<name>'")
    for name, arr in static.items():
        if name not in specs:
            raise InputError(f"{where}: static input '{name}' is not a model input (inputs: {sorted(specs)})")
        dims, dtype = specs[name]
        if len(dims) != arr.ndim or any(d is not None and d != g for d, g in zip(dims, arr.shape)):
            shown = [d if d is not None else "?" for d in dims]
            raise InputError(f"{where}: static input '{name}' has shape {list(arr.shape)}, model expects {shown}")
        if dtype is not None and arr.dtype != dtype and not (
                np.issubdtype(arr.dtype, np.floating) and np.issubdtype(dtype, np.floating)):
            raise InputError(f"{where}: static input '{name}' has dtype {arr.dtype}, model expects {np.dtype(dtype)}")


def validate_batch(batch: Mapping[str, np.ndarray], specs: Mapping[str, tuple], where: str = "calibration data",
                   static: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Check a batch against model input specs; cast float64 -> float32 data where the model wants float32.

    Args:
        batch: Input name -> array (batched inputs and, when given, static ones).
        specs: From :func:`model_input_specs`.
        where: Prefix of error messages.
        static: Names of inputs given elsewhere (per-call constants): not required in ``batch``.

    Raises:
        InputError: Missing/unknown input names, wrong rank or fixed dim, wrong dtype, NaN/Inf.
    """
    given = set(batch) | set(static)
    missing = sorted(set(specs) - given)
    unknown = sorted(set(batch) - set(specs))
    if missing or unknown:
        raise InputError(f"{where}: input names {sorted(given)} do not match the model's {sorted(specs)}"
                         + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else ""))
    out = {}
    for name, (dims, dtype) in specs.items():
        if name not in batch:
            continue
        arr = np.asarray(batch[name])
        if len(dims) and arr.ndim != len(dims):
            raise InputError(f"{where}: input '{name}' has shape {arr.shape}, model expects rank {len(dims)} {dims}")
        for ax, (want, got) in enumerate(zip(dims, arr.shape)):
            if want is not None and want != got and ax > 0:
                raise InputError(f"{where}: input '{name}' has shape {arr.shape}, model expects {dims}")
        if dtype is not None and arr.dtype != dtype:
            if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(dtype, np.floating):
                arr = arr.astype(dtype)
            else:
                raise InputError(f"{where}: input '{name}' has dtype {arr.dtype}, model expects {np.dtype(dtype)}")
        check_finite(name, arr, where)
        out[name] = arr
    return out
