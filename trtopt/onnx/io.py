"""Reading and writing ONNX files: clear load errors, verified atomic saves, external data, model hash.

:func:`save_onnx` is the one writer of model files: a model trtopt writes always passes the full
checker and loads in ONNX Runtime (:func:`verify_onnx_file`) before it is renamed into place.
Protobuf cannot serialize a message over 2 GB, so such models keep their tensors in a side file
(onnx's external-data format: each TensorProto names a file, offset and length relative to the
``.onnx``); :func:`load_onnx` reads it back through :func:`load_external_tensors`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import onnx

from trtopt.errors import InputError, TrtoptError
from trtopt.fileio import atomic_path
from trtopt.onnx.external import external_tensor_bytes, inline_tensor_bytes, write_external_data
from trtopt.onnx.ort_probe import probe_load

PROTO_LIMIT_BYTES = 2**31 - 1

_STD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}

def first_error_line(exc: BaseException) -> str:
    """First line of an exception's message (at most 400 characters), or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__

def load_graph_only(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load a model's graph without the bytes of external-data tensors, with one clear error per fault.

    Every stage reads a model through here first (data checks, output names, the doctor), so an
    empty file or a graph without nodes gets the same message in every command.

    Raises:
        InputError: ``path`` is a directory, missing, not an ONNX model, or a graph without nodes.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an ONNX model file")
    if not p.is_file():
        raise InputError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise InputError(f"{p} is not a valid ONNX model (empty graph)")
    return model

def load_onnx(path: str | os.PathLike[str], check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model, raising one clear :class:`InputError` if it is missing or corrupt.

    External data (models over 2 GB, or saved with ``save_as_external_data``) is read from the
    model's own folder, where ONNX stores it relative to the ``.onnx`` file.

    Args:
        path: ``.onnx`` file.
        check: Run ``onnx.checker`` on the loaded model (by path, so external data is checked too).

    Returns:
        The model proto, with external tensors loaded into memory.
    """
    p = Path(path)
    model = load_graph_only(p)
    if uses_external_data(model):
        try:
            load_external_tensors(model, p.parent.resolve())
        except Exception as exc:
            raise InputError(f"{p}: cannot read its external data (expected beside the model): "
                             f"{first_error_line(exc)}") from exc
    if check:
        try:
            # the checker reads the file itself: 3x faster than re-serializing the loaded proto
            onnx.checker.check_model(str(p))
        except Exception as exc:
            raise InputError(f"{p} failed the ONNX checker: {first_error_line(exc)}") from exc
    return model

def load_graph_over_limit(path: str | os.PathLike[str]) -> onnx.ModelProto | None:
    """The graph of a model whose external data alone exceed protobuf's 2 GB limit, its weights left on disk.

    Such a model can never be one serialized protobuf, so a stage that needs only its graph and an
    ONNX Runtime session (calibration) keeps the weights in their file: ONNX Runtime memory-maps
    them (:func:`trtopt.onnx.exec.make_session` with ``external_dir``) and :func:`model_hash_on_disk`
    hashes them from the file, instead of a copy in this process (plus protobuf's copies on every
    write) and a second one re-saved for ONNX Runtime.

    Returns:
        The checked graph-only proto (tensors still point at ``path``'s folder), or ``None`` for a
        model under the limit (load it with :func:`load_onnx`).

    Raises:
        InputError: As :func:`load_onnx`.
    """
    p = Path(path)
    model = load_graph_only(p)
    if external_tensor_bytes(model, p.parent) <= PROTO_LIMIT_BYTES:
        return None
    try:
        onnx.checker.check_model(str(p))
    except Exception as exc:
        raise InputError(f"{p} failed the ONNX checker: {first_error_line(exc)}") from exc
    return model

def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str], *, check: bool = True, ort_load: bool = True,
              external_data: bool | None = None) -> Path:
    """Save ``model`` atomically, verified: nothing is left at ``path`` unless the file is valid.

    The model is written to a temporary file beside ``path``; that file must pass
    ``onnx.checker`` with ``full_check`` (strict shape inference) and load in an ONNX Runtime
    CPU session opened *by path* (so external data is exercised exactly as a user would) before
    it is renamed onto ``path``. Models whose protobuf would exceed 2 GB are written with their
    tensors in ``<path name>.data`` beside the ``.onnx`` (onnx's external-data format).

    Args:
        model: Model to save. Not modified (tensors moved to external data are read back).
        path: Destination ``.onnx`` path.
        check: Run the full ONNX checker (skip only for a model the caller just checked).
        ort_load: Open the file in ONNX Runtime. Skip only for graphs ONNX Runtime cannot hold by
            design (custom-domain plugin ops meant for TensorRT); say why at the call site.
        external_data: Force (``True``) or forbid (``False``) external data; ``None`` chooses it when
            the serialized model would exceed protobuf's 2 GB limit.

    Returns:
        The destination path.

    Raises:
        InputError: The destination cannot be written.
        TrtoptError: The written model fails the checker or ONNX Runtime refuses it (a trtopt bug or
            an unsupported input model); the message names the file and the first error line.
    """
    dest = Path(path)
    if external_data is None:
        external_data = not fits_protobuf(model)
    if not external_data:
        with atomic_path(dest) as tmp:
            onnx.save(model, str(tmp))
            verify_onnx_file(tmp, check=check, ort_load=ort_load, label=str(dest),
                             domains={o.domain for o in model.opset_import})
        return dest
    return save_with_external_data(model, dest, check=check, ort_load=ort_load)

def fits_protobuf(model: onnx.ModelProto, extra_bytes: int = 0) -> bool:
    """True when ``model`` (plus ``extra_bytes``) serializes under :data:`PROTO_LIMIT_BYTES`.

    Protobuf's C implementation refuses even to compute the size of a message over 2 GB
    (``EncodeError``), which is an answer too. ``ByteSize`` serializes the whole message (seconds and
    a transient copy of a multi-GB model), so the in-memory tensor payloads (read from their dims,
    never copied) are summed first: over the limit they answer alone.
    """
    from google.protobuf.message import EncodeError

    if inline_tensor_bytes(model) + extra_bytes > PROTO_LIMIT_BYTES:
        return False
    try:
        return model.ByteSize() + extra_bytes <= PROTO_LIMIT_BYTES
    except EncodeError:
        return False

def uses_external_data(model: onnx.ModelProto) -> bool:
    """True when some tensor of ``model`` (initializer or node attribute, any subgraph) is stored externally."""
    from onnx.external_data_helper import _get_all_tensors
    from onnx.external_data_helper import uses_external_data as _ext

    return any(_ext(t) for t in _get_all_tensors(model))

def load_external_tensors(model: onnx.ModelProto, base_dir: str | os.PathLike[str]) -> None:
    """Read every external tensor of ``model`` (files relative to ``base_dir``) into memory, in place.

    Afterwards the proto is the one an inline save would have produced (``data_location`` unset),
    so its serialization and :func:`model_hash` do not depend on how the file was stored.
    """
    from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor
    from onnx.external_data_helper import uses_external_data as _ext

    for t in _get_all_tensors(model):
        if _ext(t):
            load_external_data_for_tensor(t, str(base_dir))
            del t.external_data[:]
            t.ClearField("data_location")

def verify_onnx_file(path: str | os.PathLike[str], *, check: bool = True, ort_load: bool = True,
                     label: str | None = None, domains: set[str] | None = None) -> None:
    """Check a written ``.onnx`` file: full ``onnx.checker`` and ONNX Runtime CPU sessions, both by path.

    By path, so external data next to the file is read the way a user's runtime reads it.
    ``domains`` (the model's opset domains) saves re-reading the file when the caller has the proto.
    ONNX Runtime opens the file the way trtopt's stages do -- with graph optimizations off and
    with its default full optimization, through :func:`trtopt.onnx.exec.make_session` -- in a
    helper process (:func:`trtopt.onnx.ort_probe.probe_load`), so a model that crashes ONNX
    Runtime while it is optimized is refused in one error instead of ending the process. Skipped
    for models with custom-domain ops ONNX Runtime cannot know.

    Raises:
        TrtoptError: The file fails the checker, ONNX Runtime refuses it, or ONNX Runtime crashes
            opening it (first error line or the signal quoted).
    """
    name = label or str(path)
    if check:
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            raise TrtoptError(f"refusing to write {name}: it fails the ONNX checker: {first_error_line(exc)}") from exc
    if not ort_load:
        return
    if domains is None:  # the opset domains, read without the weights
        domains = {o.domain for o in onnx.load(str(path), load_external_data=False).opset_import}
    if domains - _STD_DOMAINS:  # e.g. TensorRT plugin ops: ONNX Runtime cannot hold them by design
        return
    failure = probe_load(path)
    if failure is None:
        return
    if failure.crashed:
        raise TrtoptError(f"refusing to write {name}: {failure}, as `trtopt bench` and `trtopt run` open it")
    raise TrtoptError(f"refusing to write {name}: ONNX Runtime cannot load it: {failure}")

def _domains(model: onnx.ModelProto) -> set[str]:
    return {o.domain for o in model.opset_import}

def save_with_external_data(model: onnx.ModelProto, dest: Path, *, check: bool, ort_load: bool) -> Path:
    """Write ``dest`` + ``dest.name + '.data'`` atomically: both go to a temp folder, are verified, then renamed.

    The data file is renamed first, then the ``.onnx``, so a reader never sees a model whose data
    is missing. The caller's proto is unchanged (:func:`trtopt.onnx.external.write_external_data`).
    """
    if dest.is_dir():
        raise InputError(f"cannot write {dest}: it is a directory")
    location = dest.name + ".data"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmpdir", dir=dest.parent))
    except OSError as exc:
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    try:
        if uses_external_data(model):  # tensors already pointing at files: onnx's helper moves them
            _save_converted(model, tmpdir, dest.name, location)
        else:  # the usual case: written tensor by tensor, the caller's proto untouched (no read-back copy)
            onnx.save(write_external_data(model, tmpdir, location), str(tmpdir / dest.name))
        verify_onnx_file(tmpdir / dest.name, check=check, ort_load=ort_load, label=str(dest), domains=_domains(model))
        umask = os.umask(0)
        os.umask(umask)
        for f in (tmpdir / location, tmpdir / dest.name):  # the usual artifact permissions, as atomic_path
            if f.is_file():
                os.chmod(f, 0o666 & ~umask)
        if (tmpdir / location).is_file():
            os.replace(tmpdir / location, dest.parent / location)
        os.replace(tmpdir / dest.name, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return dest

def _save_converted(model: onnx.ModelProto, folder: Path, name: str, location: str) -> None:
    """Save with onnx's own external-data helper; ``model``'s tensors are read back afterwards (it is unchanged)."""
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=location, size_threshold=1024,
                                   convert_attribute=True)  # Constant-node weights (Paddle) too
    try:
        onnx.save(model, str(folder / name))
    finally:  # put the tensors back into the caller's proto whatever happened
        if (folder / location).is_file():
            load_external_tensors(model, folder)

def model_hash(model: onnx.ModelProto, serialized: bytes | None = None) -> str:
    """SHA-256 identifying a model's content, also for models too large to serialize.

    Below protobuf's 2 GB limit it is the SHA-256 of ``model.SerializeToString()`` (the hash
    calibration tables have always carried). Above it, the hash is taken over the model with
    every large tensor's bytes replaced by their own SHA-256 (computed tensor by tensor, never
    holding a second copy), prefixed ``ext:`` so the two kinds never collide.
    """
    if serialized is not None:
        return hashlib.sha256(serialized).hexdigest()
    if fits_protobuf(model):
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    from onnx.external_data_helper import _get_all_tensors

    h = hashlib.sha256(b"ext:")
    saved = []
    for t in _get_all_tensors(model):
        if t.HasField("raw_data") and len(t.raw_data) > 1024:
            raw = t.raw_data
            h.update(t.name.encode() + hashlib.sha256(raw).digest())
            saved.append((t, raw))
            t.ClearField("raw_data")
    try:
        h.update(model.SerializeToString())
    finally:
        for t, raw in saved:
            t.raw_data = raw
    return "ext:" + h.hexdigest()
