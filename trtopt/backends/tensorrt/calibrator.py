"""TensorRT 10.x implicit INT8: Polygraphy's ``Calibrator`` fed from trtopt calibration sources and caches.

NVIDIA's ``polygraphy.backend.trt.Calibrator`` (tested against every TensorRT release) owns the
TensorRT callbacks: the pybind11 trampoline ``__init__``, ``get_batch`` (host -> device copies through
its own CUDA wrapper, one buffer per input reused across batches), ``read/write_calibration_cache``.
trtopt keeps only what Polygraphy does not know:

- :class:`CalibrationFeed`: the data-loader adapter. Polygraphy's data loader is any iterable of
  ``{input name: ndarray}`` feed dicts; trtopt sources already are, but TensorRT needs FP32 data for
  float inputs at exactly the calibration profile's OPT shape, and an error raised while iterating
  would be swallowed (Polygraphy's ``get_batch`` catches Polygraphy errors; TensorRT swallows the
  rest) and read as "no more data". The feed therefore checks each batch, records the
  first error and ends; :func:`finish_calibration` re-raises it after the build.
- The cache handoff: trtopt's table or cache, with its header rewritten for the running TensorRT
  (:func:`cache_text_for`), reaches Polygraphy through an anonymous temporary file, and the cache
  TensorRT produces is written into the engine store by trtopt (atomically) rather than by
  Polygraphy. Why: Polygraphy reads ``cache`` before calibrating, so pointing it at the store's path
  would reuse a stale file from an earlier build, and its ``save_file`` writes in place and only
  logs failures (polygraphy 0.53.6 ``backend/trt/calibrator.py``, ``util/util.py``).
- The calibrator class: the algorithm named in the cache header picks ``IInt8EntropyCalibrator2`` or
  ``IInt8MinMaxCalibrator`` (:func:`calibrator_base`), so a MinMax table is not handed to TensorRT
  as entropy scales.

Polygraphy and TensorRT are imported only inside :func:`make_calibrator` (``import trtopt`` stays light).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.errors import ConfigError, InputError
from trtopt.fileio import atomic_write_bytes
from trtopt.log import get_logger
from trtopt.optional import require

log = get_logger(__name__)

#: Cache-header algorithm -> TensorRT 10 calibrator class handed to Polygraphy as ``BaseClass``.
CALIBRATOR_BASES = {"EntropyCalibration2": "IInt8EntropyCalibrator2", "MinMaxCalibration": "IInt8MinMaxCalibrator"}


def cache_text_for(path: str | os.PathLike[str], nv_version: int, tensor_names: Iterable[str] | None = None) -> str:
    """TensorRT cache text for a trtopt table (``.json``) or a TensorRT cache, headed for ``nv_version``.

    The header is rewritten for the running TensorRT: caches from another release may be rejected
    and TensorRT would then try to calibrate without data.

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


def calibrator_base(cache_text: str | None) -> str:
    """TensorRT calibrator class name for a cache (header ``TRT-<version>-<Algorithm>``); entropy without one.

    Raises:
        ConfigError: The header names an algorithm trtopt does not build with.
    """
    if not cache_text:
        return CALIBRATOR_BASES["EntropyCalibration2"]
    algorithm = cache_text.split("\n", 1)[0].strip().rpartition("-")[2]
    if algorithm not in CALIBRATOR_BASES:
        raise ConfigError(f"calibration cache made by {algorithm}; trtopt builds with {sorted(CALIBRATOR_BASES)}")
    return CALIBRATOR_BASES[algorithm]


def check_batch(batch: Mapping[str, Any], names: Sequence[str], opt_shapes: Mapping[str, Sequence[int]]) -> None:
    """Validate one calibration batch: every input present, FP32-convertible, exactly the OPT shape.

    TensorRT calibrates dynamic-shape networks at the calibration profile's OPT shape.
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


class CalibrationFeed:
    """Polygraphy data loader over a trtopt calibration source (rewindable ``{name: ndarray}`` batches).

    Each ``iter()`` restarts the source (Polygraphy's ``Calibrator.reset`` rewinds this way) and yields
    ``{input name: C-contiguous array}`` holding only the network inputs, float data as float32.

    Args:
        source: Calibration batches, or None when a cache is expected to make them unnecessary.
        input_shapes: Network input name -> the shape TensorRT calibrates at (OPT shape of the
            calibration profile for dynamic inputs, the static shape otherwise).

    Attributes:
        batches: Batches handed out by the latest pass.
        error: First error met (bad batch, failing source, no data), re-raised by :func:`finish_calibration`.
        input_metadata: Set by Polygraphy when it knows the network inputs (unused here).
    """

    def __init__(self, source: Iterable[Mapping[str, Any]] | None, input_shapes: Mapping[str, Sequence[int]]) -> None:
        if not input_shapes:
            raise ConfigError("calibration needs the network's input names and shapes")
        self.source = source
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}
        self.batches = 0
        self.error: BaseException | None = None
        self.input_metadata: Any = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        # A generator: nothing runs until TensorRT asks for the first batch, so a build that takes
        # its scales from the cache never touches the source.
        self.batches, self.error = 0, None
        if self.source is None:
            self.error = InputError("TensorRT did not accept the calibration cache and no calibration data was given")
            return
        names = list(self.input_shapes)
        try:
            for batch in self.source:
                check_batch(batch, names, self.input_shapes)
                feed = {}
                for n in names:
                    arr = np.asarray(batch[n])
                    # TensorRT reads calibration data for float inputs as FP32 even when the engine I/O is FP16.
                    feed[n] = np.ascontiguousarray(arr, dtype=np.float32 if arr.dtype.kind == "f" else arr.dtype)
                self.batches += 1
                yield feed
        except Exception as exc:  # TensorRT would swallow it and build with the batches seen so far
            self.error = exc
            return
        if not self.batches:
            self.error = InputError("the calibration source yielded no batches")


def make_calibrator(trt: Any, feed: CalibrationFeed, cache_text: str | None) -> Any:
    """Polygraphy ``Calibrator`` for a TensorRT 10.x implicit-INT8 build (set as ``int8_calibrator``).

    Args:
        trt: The imported ``tensorrt`` module (TensorRT 10.x: it has the calibrator classes).
        feed: The data loader (see :class:`CalibrationFeed`).
        cache_text: Cache handed to TensorRT (calibration is skipped when TensorRT accepts it), or None.

    Returns:
        The calibrator; keep it until :func:`finish_calibration` after the build.

    Raises:
        MissingDependencyError: Polygraphy is not installed.
        ConfigError: Polygraphy is set to TensorRT for RTX (``POLYGRAPHY_USE_TENSORRT_RTX``), which has
            no calibrators, or the cache names an unknown algorithm.
    """
    require("polygraphy", "tensorrt", "needed for implicit INT8 calibration on TensorRT 10")
    from polygraphy import config as polygraphy_config
    from polygraphy.backend.trt import Calibrator

    if polygraphy_config.USE_TENSORRT_RTX:
        raise ConfigError("POLYGRAPHY_USE_TENSORRT_RTX is set, but implicit INT8 needs TensorRT 10's calibrators: "
                          "unset it for this build")
    bases = {"IInt8EntropyCalibrator2": trt.IInt8EntropyCalibrator2, "IInt8MinMaxCalibrator": trt.IInt8MinMaxCalibrator}
    base = calibrator_base(cache_text)
    cache = None
    if cache_text:
        # A real file: Polygraphy sizes the cache with os.stat(fileno()), which an io.BytesIO lacks.
        cache = tempfile.TemporaryFile()  # noqa: SIM115 (closed by finish_calibration; anonymous, never left on disk)
        cache.write(cache_text.encode("ascii"))
        cache.flush()
    calibrator = Calibrator(feed, cache=cache, BaseClass=bases[base])
    calibrator.trtopt_feed, calibrator.trtopt_cache_file, calibrator.trtopt_base = feed, cache, base
    return calibrator


def finish_calibration(calibrator: Any, cache_out: str | os.PathLike[str] | None) -> dict[str, Any]:
    """After the build: free device buffers, re-raise a recorded error, save the cache TensorRT made.

    Args:
        calibrator: What :func:`make_calibrator` returned.
        cache_out: Where to write the calibration cache when TensorRT calibrated from data (atomic), or None.

    Returns:
        ``{"calibrator": class name, "batches": n}`` for the manifest (``batches`` 0: scales came from the cache).

    Raises:
        InputError: The feed failed (bad batch, no data, cache rejected without data).
    """
    feed = calibrator.trtopt_feed
    try:
        calibrator.free()
    finally:
        if calibrator.trtopt_cache_file is not None:
            calibrator.trtopt_cache_file.close()
    if feed.error is not None:
        err = feed.error
        raise err if isinstance(err, InputError) else InputError(f"calibration failed: {err}")
    contents = getattr(calibrator, "cache_contents", None)  # set by Polygraphy's write_calibration_cache
    if feed.batches and contents and cache_out is not None:
        atomic_write_bytes(cache_out, bytes(contents))
        log.info("wrote TensorRT calibration cache %s (%d batches)", cache_out, feed.batches)
    return {"calibrator": f"polygraphy Calibrator({calibrator.trtopt_base})", "batches": feed.batches}
