"""External-data tensors without their bytes in memory: sizes, hashes from disk, and direct writes.

Protobuf's Python messages (upb) hand out a copy of ``raw_data`` on every read, and a buffer given
back to a message is only freed with the whole message, so a multi-GB model is measured from its
dims, hashed from its data file, and written out tensor by tensor into a graph-only copy here
instead of through onnx's ``convert_model_to_external_data`` (which empties the caller's tensors
and, read back, holds every weight twice).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import onnx

from trtopt.errors import InputError

#: the tensors of a model that live in its graphs and functions (onnx's walk of them)
_HOLDERS = ("GraphProto", "NodeProto", "AttributeProto", "FunctionProto")


def _nbytes(t: onnx.TensorProto) -> int | None:
    """Bytes of ``t``'s ``raw_data`` from its dims and element type (``None``: a type without a fixed size)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    if t.data_type in (0, onnx.TensorProto.STRING):
        return None
    try:
        size = tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    n = 1
    for d in t.dims:
        n *= d
    return n // 2 if t.data_type in _SUB_BYTE else n * size


def inline_tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the ``raw_data`` payloads held in ``model`` (any subgraph), from dims and element size.

    A lower bound of the serialized size that never touches the bytes (reading ``raw_data`` copies them).
    """
    from onnx.external_data_helper import _get_all_tensors

    return sum(_nbytes(t) or 0 for t in _get_all_tensors(model) if t.HasField("raw_data"))

#: 4-bit types: two elements per byte.
_SUB_BYTE = {getattr(onnx.TensorProto, k) for k in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, k)}

def _open_external(t: onnx.TensorProto, base_dir: Path):
    """``(binary file positioned at ``t``'s data, length)`` for an external tensor (onnx's path rules)."""
    from onnx.external_data_helper import ExternalDataInfo, _open_external_data_fd

    info = ExternalDataInfo(t)
    f = os.fdopen(_open_external_data_fd(str(base_dir), info.location, t.name, True), "rb")
    size = os.fstat(f.fileno()).st_size
    offset = info.offset or 0
    length = size - offset if info.length is None else info.length
    if offset + length > size:
        f.close()
        raise InputError(f"external data of tensor '{t.name}' runs past the end of {info.location}")
    f.seek(offset)
    return f, length

def external_tensor_bytes(model: onnx.ModelProto, base_dir: str | os.PathLike[str]) -> int:
    """Bytes of ``model``'s external tensors (from their ``length`` entries or the file size).

    Raises:
        InputError: A data file is missing or shorter than a tensor says.
    """
    from onnx.external_data_helper import _get_all_tensors
    from onnx.external_data_helper import uses_external_data as _ext

    total = 0
    try:
        for t in _get_all_tensors(model):
            if _ext(t):
                f, n = _open_external(t, Path(base_dir))
                f.close()
                total += n
    except InputError:
        raise
    except Exception as exc:
        why = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read the external data of the model (expected beside it in {base_dir}): "
                         f"{why}") from exc
    return total

def model_hash_on_disk(model: onnx.ModelProto, base_dir: str | os.PathLike[str]) -> str:
    """:func:`model_hash` of the model :func:`load_onnx` would return, its external tensors read from disk.

    For a model over protobuf's limit (:func:`load_graph_over_limit`): every tensor over 1 KiB is
    hashed from its file in 64 MiB chunks, in the order and form of :func:`model_hash`, so the
    hash equals that of the loaded model while no weight is held in memory.
    """
    from onnx.external_data_helper import _get_all_tensors
    from onnx.external_data_helper import uses_external_data as _ext

    skel = onnx.ModelProto()
    skel.CopyFrom(model)  # graph only: no weight bytes
    h = hashlib.sha256(b"ext:")
    for t in _get_all_tensors(skel):
        if not _ext(t):
            if t.HasField("raw_data") and len(t.raw_data) > 1024:
                h.update(t.name.encode() + hashlib.sha256(t.raw_data).digest())
                t.ClearField("raw_data")
            continue
        f, left = _open_external(t, Path(base_dir))
        with f:
            del t.external_data[:]
            t.ClearField("data_location")
            if left <= 1024:  # kept in the proto, as load_onnx leaves it
                t.raw_data = f.read(left)
                continue
            th = hashlib.sha256()
            while left:
                chunk = f.read(min(left, 1 << 26))
                if not chunk:
                    raise InputError(f"external data of tensor '{t.name}' ends early")
                th.update(chunk)
                left -= len(chunk)
        t.ClearField("raw_data")
        h.update(t.name.encode() + th.digest())
    h.update(skel.SerializeToString())
    return "ext:" + h.hexdigest()



def _light_copy(src, dst, threshold: int) -> None:
    """Copy ``src`` into ``dst`` (same type) leaving out ``raw_data`` of tensors of ``threshold`` bytes or more.

    Only messages that can hold tensors are walked field by field; everything else is copied whole.
    """
    if isinstance(src, onnx.TensorProto):
        n = _nbytes(src) if src.HasField("raw_data") else None
        if n is None or n + sys.getsizeof(b"") < threshold:
            dst.CopyFrom(src)
            return
        for fd in src.DESCRIPTOR.fields:  # never ListFields(): it would read (copy) raw_data
            if fd.name == "raw_data":
                continue
            if fd.is_repeated:
                getattr(dst, fd.name).extend(getattr(src, fd.name))
            elif src.HasField(fd.name):
                if fd.message_type is not None:
                    getattr(dst, fd.name).CopyFrom(getattr(src, fd.name))
                else:
                    setattr(dst, fd.name, getattr(src, fd.name))
        return
    for fd, val in src.ListFields():
        walk = fd.message_type is not None and fd.message_type.name in (*_HOLDERS, "TensorProto")
        if fd.is_repeated:
            if walk:
                for v in val:
                    _light_copy(v, getattr(dst, fd.name).add(), threshold)
            else:
                getattr(dst, fd.name).extend(val)
        elif walk:
            _light_copy(val, getattr(dst, fd.name), threshold)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(val)
        else:
            setattr(dst, fd.name, val)


def write_external_data(model: onnx.ModelProto, folder: Path, location: str,
                        threshold: int = 1024) -> onnx.ModelProto:
    """Write every tensor of ``threshold`` bytes or more to ``folder/location``; return the graph pointing at it.

    Saved beside the data file (by :func:`trtopt.onnx.io.save_onnx`), the returned proto gives the
    files of onnx's ``convert_model_to_external_data(all_tensors_to_one_file=True,
    size_threshold=threshold, convert_attribute=True)`` + ``onnx.save`` (same tensors, order,
    offsets and entries), but ``model`` is never changed: the result is a graph-only copy, and each
    tensor's bytes are read once and written straight to the data file.
    """
    from onnx.external_data_helper import _get_all_tensors, set_external_data

    skel = onnx.ModelProto()
    _light_copy(model, skel, threshold)
    data = None
    try:
        for t, light in zip(_get_all_tensors(model), _get_all_tensors(skel)):
            if not t.HasField("raw_data") or light.HasField("raw_data"):
                continue
            if data is None:
                data = open(folder / location, "wb")  # noqa: SIM115 (closed below)
            offset = data.tell()
            data.write(t.raw_data)  # one transient copy of this tensor
            light.raw_data = b""  # set_external_data wants the field; cleared below
            set_external_data(light, location, offset, data.tell() - offset)
            light.ClearField("raw_data")
    finally:
        if data is not None:
            data.close()
    return skel
