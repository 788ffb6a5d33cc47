"""Calibration tables: JSON (tensor -> amax plus provenance) and TensorRT's calibration cache.

TensorRT cache format: first line ``TRT-<NV_TENSORRT_VERSION>-<Algorithm>``, then one
``<tensor name>: <8 lowercase hex digits>`` line per tensor, the hex being the big-endian IEEE-754
float32 bit pattern of ``scale = amax / 127``.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.errors import IncompatibleArtifactError, InputError
from trtopt.fileio import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
#: TensorRT algorithm name written in the cache header, per calibration method.
TRT_ALGORITHM = {"auto": "EntropyCalibration2", "entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                 "percentile": "EntropyCalibration2", "mse": "EntropyCalibration2"}
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


def scale_to_hex(scale: float) -> str:
    """Float32 bit pattern of ``scale`` as 8 lowercase hex digits (TensorRT cache encoding)."""
    return f"{struct.unpack('>I', struct.pack('>f', scale))[0]:08x}"


def hex_to_scale(text: str) -> float:
    """Inverse of :func:`scale_to_hex`."""
    return struct.unpack(">f", bytes.fromhex(text))[0]


@dataclass
class CalibrationTable:
    """Per-tensor activation ranges and where they came from.

    Attributes:
        amax: Tensor name -> amax (symmetric range ``[-amax, amax]``; INT8 scale = amax/127).
        method: Calibration method that produced the ranges.
        data_hash: sha256 of the calibration batches (in iteration order).
        model_hash: sha256 of the serialized model that was calibrated.
        num_samples: Samples seen.
        meta: Extra provenance (config, trtopt version, ...).
        channel_amax: Tensor name -> per-input-channel max|x| (last axis) for activations feeding
            MatMul/Gemm with constant weights (SmoothQuant's statistics; empty when not collected).
        info: Tensor name -> how its range was chosen: ``method`` (the one that won: ``analytic``,
            ``entropy``, ``percentile 99.99``, ``mse``, ``max``, ...), ``reason``, for ``auto`` the
            ``candidates`` (amax, estimated error, clipped share, rejection), and ``flags`` (warnings
            such as an outlier-dominated range). Optional in JSON (tables without it load fine).
    """

    amax: dict[str, float]
    method: str = "entropy"
    data_hash: str = ""
    model_hash: str = ""
    num_samples: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    channel_amax: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.amax)

    def __contains__(self, name: object) -> bool:
        return name in self.amax

    def __getitem__(self, name: str) -> float:
        return self.amax[name]

    def scale(self, name: str) -> float:
        """INT8 scale of ``name`` (amax / 127)."""
        return self.amax[name] / 127.0

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (schema :data:`SCHEMA_VERSION`)."""
        d = {"schema_version": SCHEMA_VERSION, "method": self.method, "data_hash": self.data_hash,
             "model_hash": self.model_hash, "num_samples": self.num_samples, "meta": self.meta,
             "amax": {k: float(v) for k, v in sorted(self.amax.items())}}
        if self.channel_amax:
            d["channel_amax"] = {k: [float(x) for x in v] for k, v in sorted(self.channel_amax.items())}
        if self.info:
            d["tensors"] = {k: {"amax": float(self.amax[k]), **v} if k in self.amax else dict(v)
                            for k, v in sorted(self.info.items())}
        return d

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the table atomically as JSON."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> CalibrationTable:
        """Read a table written by :meth:`save_json`.

        Raises:
            InputError: Missing file, invalid JSON, unknown schema or malformed entries.
        """
        p = Path(path)
        if p.is_dir():
            raise InputError(f"calibration table {p} is a directory, not a file")
        if not p.is_file():
            raise InputError(f"calibration table not found: {p}")
        try:
            d = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{p} is not a valid calibration table (invalid JSON: {exc})") from exc
        if not isinstance(d, dict) or d.get("schema_version") != SCHEMA_VERSION or not isinstance(d.get("amax"), dict):
            raise InputError(f"{p} is not a trtopt calibration table (schema_version {SCHEMA_VERSION} with 'amax')")
        amax = {}
        for k, v in d["amax"].items():
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{p}: tensor '{k}' has an invalid amax {v!r}")
            amax[k] = float(v)
        return cls(amax=amax, method=str(d.get("method", "")), data_hash=str(d.get("data_hash", "")),
                   model_hash=str(d.get("model_hash", "")), num_samples=int(d.get("num_samples", 0)),
                   meta=dict(d.get("meta", {})), channel_amax=_channel_amax(p, d.get("channel_amax", {})),
                   info=_info(p, d.get("tensors", {})))

    # -- TensorRT cache ----------------------------------------------------------------
    def to_trt_cache(self, trt_version: int = 100300) -> str:
        """TensorRT calibration cache text for TensorRT version ``trt_version`` (NV_TENSORRT_VERSION)."""
        algo = TRT_ALGORITHM.get(self.method, "EntropyCalibration2")
        lines = [f"TRT-{int(trt_version)}-{algo}"]
        lines += [f"{name}: {scale_to_hex(a / 127.0)}" for name, a in self.amax.items()]
        return "\n".join(lines) + "\n"

    def write_trt_cache(self, path: str | os.PathLike[str], trt_version: int = 100300) -> Path:
        """Write the TensorRT calibration cache atomically (usable by a TensorRT 10 INT8 build)."""
        return atomic_write_text(path, self.to_trt_cache(trt_version))

    @classmethod
    def read_trt_cache(cls, path: str | os.PathLike[str], tensor_names: Iterable[str] | None = None
                       ) -> CalibrationTable:
        """Parse a TensorRT calibration cache.

        Args:
            path: Cache file.
            tensor_names: Tensor names of the model it should belong to; when given, entries naming
                other tensors (except TensorRT-internal ``(Unnamed Layer* ...)`` names) are rejected.

        Raises:
            InputError: Missing, binary, truncated or malformed cache.
            IncompatibleArtifactError: The cache names tensors the model does not have.
        """
        p = Path(path)
        if p.is_dir():
            raise InputError(f"calibration cache {p} is a directory, not a file")
        if not p.is_file():
            raise InputError(f"calibration cache not found: {p}")
        try:
            text = p.read_bytes().decode("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{p} is not a TensorRT calibration cache (not ASCII text)") from exc
        lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
        m = _HEADER.match(lines[0]) if lines else None
        if not m:
            raise InputError(f"{p} is not a TensorRT calibration cache (bad header {lines[0][:40]!r})" if lines
                             else f"{p} is an empty calibration cache")
        amax: dict[str, float] = {}
        for n, ln in enumerate(lines[1:], start=2):
            lm = _LINE.match(ln)
            if not lm:
                raise InputError(f"{p}: damaged calibration cache at line {n}: {ln[:60]!r}")
            scale = hex_to_scale(lm.group(2))
            if not math.isfinite(scale) or scale < 0:
                raise InputError(f"{p}: damaged calibration cache at line {n}: scale {scale}")
            amax[lm.group(1)] = scale * 127.0
        method = {"EntropyCalibration2": "entropy", "MinMaxCalibration": "minmax"}.get(m.group(2), m.group(2))
        table = cls(amax=amax, method=method, meta={"trt_version": int(m.group(1)), "algorithm": m.group(2)})
        if tensor_names is not None:
            table.check_names(tensor_names, what=str(p))
        return table

    def check_names(self, tensor_names: Iterable[str], what: str = "calibration table") -> None:
        """Raise :class:`IncompatibleArtifactError` if the table names tensors the model lacks."""
        names = set(tensor_names)
        foreign = [k for k in self.amax if k not in names and not k.startswith("(Unnamed Layer")]
        if foreign:
            shown = ", ".join(repr(f) for f in foreign[:3])
            raise IncompatibleArtifactError(
                f"{what} does not belong to this model: {len(foreign)} of {len(self.amax)} tensors "
                f"are not in it (e.g. {shown})")

    def subset(self, names: Mapping[str, Any] | Iterable[str]) -> CalibrationTable:
        """Copy holding only ``names``."""
        keep = set(names)
        return CalibrationTable({k: v for k, v in self.amax.items() if k in keep}, self.method, self.data_hash,
                                self.model_hash, self.num_samples, dict(self.meta),
                                {k: v for k, v in self.channel_amax.items() if k in keep},
                                {k: v for k, v in self.info.items() if k in keep})


def _channel_amax(path: Path, raw: object) -> dict[str, list[float]]:
    """Validate the optional ``channel_amax`` section of a JSON table."""
    if not isinstance(raw, dict):
        raise InputError(f"{path}: 'channel_amax' must map tensor names to lists of numbers")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, list) or not v or not all(
                isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in v):
            raise InputError(f"{path}: tensor '{k}' has an invalid channel_amax (want a list of finite numbers >= 0)")
        out[k] = [float(x) for x in v]
    return out


def _info(path: Path, raw: object) -> dict[str, dict[str, Any]]:
    """Validate the optional ``tensors`` section (per-tensor provenance) of a JSON table."""
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise InputError(f"{path}: 'tensors' must map tensor names to objects")
    return {str(k): {f: x for f, x in v.items() if f != "amax"} for k, v in raw.items()}  # amax lives in 'amax'
