"""TensorRT 10.x implicit-INT8 entropy calibrator fed by trtopt calibration sources and caches.

The cache TensorRT reads and writes is the same text format :class:`~trtopt.calib.table.CalibrationTable`
writes (brief §3.2), so a table calibrated on a CPU lets a Jetson build skip calibration: the
calibrator hands the cache to TensorRT and ``get_batch`` is never called.

TensorRT swallows exceptions raised inside calibrator methods (they become "no more data"), so the
calibrator records the first error and :func:`raise_if_failed` re-raises it after the build.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trtopt.errors import InputError
from trtopt.fileio import atomic_write_bytes
from trtopt.log import get_logger

log = get_logger(__name__)


def cache_text_for(path: str | os.PathLike[str], nv_version: int, tensor_names: Iterable[str] | None = None) -> str:
    """TensorRT cache text for a trtopt table (``.json``) or a TensorRT cache, headed for ``nv_version``.

    The header is rewritten for the running TensorRT: caches from another release may be rejected
    and TensorRT would then try to calibrate without data (brief §3.2).

    Args:
        path: ``CalibrationTable`` JSON or TensorRT calibration cache.
        nv_version: Running ``NV_TENSORRT_VERSION`` (e.g. 100300).
        tensor_names: The model's tensor names; a table naming other tensors is rejected.

    Raises:
        InputError: Unreadable or malformed file.
        IncompatibleArtifactError: The table belongs to another model.
    """
    from trtopt.calib.table import CalibrationTable

    p = Path(path)
    if p.suffix.lower() == ".json":
        table = CalibrationTable.load_json(p)
        if tensor_names is not None:
            table.check_names(tensor_names, what=str(p))
    else:
        table = CalibrationTable.read_trt_cache(p, tensor_names)
    if not len(table):
        raise InputError(f"{p} holds no tensor scales")
    return table.to_trt_cache(nv_version)


def check_batch(batch: Mapping[str, Any], names: Sequence[str], opt_shapes: Mapping[str, Sequence[int]]) -> None:
    """Validate one calibration batch: every input present, FP32-convertible, exactly the OPT shape.

    TensorRT calibrates dynamic-shape networks at the calibration profile's OPT shape (brief §1.4).
    """
    missing = [n for n in names if n not in batch]
    if missing:
        raise InputError(f"calibration batch lacks input(s) {missing}")
    for n in names:
        want = tuple(opt_shapes.get(n, ()))
        got = tuple(batch[n].shape)
        if want and got != want:
            raise InputError(f"calibration batch for '{n}' has shape {got}; TensorRT calibrates at the "
                             f"profile's OPT shape {want} (set --shapes so OPT matches the batches)")


def make_entropy_calibrator(trt: Any, source: Iterable[Mapping[str, Any]] | None, cache_text: str | None,
                            cache_out: str | os.PathLike[str] | None,
                            opt_shapes: Mapping[str, Sequence[int]]) -> Any:
    """Create an ``IInt8EntropyCalibrator2`` (TensorRT 10.x only; the class is defined here, lazily).

    Args:
        trt: The imported ``tensorrt`` module.
        source: Calibration batches ``{input name: ndarray}`` (a trtopt ``CalibrationSource``), or None.
        cache_text: Cache handed to TensorRT (skips calibration), or None to calibrate from ``source``.
        cache_out: Where to save the cache TensorRT produces, or None.
        opt_shapes: Input name -> OPT shape of the calibration profile.

    Returns:
        The calibrator; keep a reference until the build finishes.
    """
    import numpy as np
    import torch

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # mandatory: pybind11 trampoline
            self.error: BaseException | None = None
            self.batches = 0
            self._iter = iter(source) if source is not None else iter(())
            self._held: list[Any] = []

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the tensor shapes

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            try:
                batch = next(self._iter)
                check_batch(batch, names, opt_shapes)
                # Calibration data is FP32 for float inputs even when the engine I/O is INT8/FP16.
                self._held = [torch.from_numpy(np.ascontiguousarray(batch[n], dtype=np.float32)).cuda()
                              for n in names]
                self.batches += 1
                return [int(t.data_ptr()) for t in self._held]
            except StopIteration:
                return None
            except Exception as exc:  # TensorRT would swallow it; keep it for raise_if_failed
                self.error = exc
                return None

        def read_calibration_cache(self) -> bytes | None:
            return cache_text.encode("ascii") if cache_text else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_out is not None:
                try:
                    atomic_write_bytes(cache_out, bytes(cache))
                    log.info("wrote TensorRT calibration cache %s", cache_out)
                except Exception as exc:
                    self.error = exc

    return _EntropyCalibrator()


def raise_if_failed(calibrator: Any) -> None:
    """Re-raise an error recorded inside the calibrator (TensorRT swallowed it)."""
    err = getattr(calibrator, "error", None)
    if err is not None:
        raise err if isinstance(err, InputError) else InputError(f"calibration failed: {err}")
