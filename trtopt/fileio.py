"""Atomic artifact writes and content hashing.

Artifacts are written to a temporary file in the destination folder and renamed into
place, so an interrupted run never leaves a half-written model, table or engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trtopt.errors import ConfigError, InputError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    On any exception the temporary file is removed, ``dest`` is left untouched and the parent
    folders created for it are removed again (when still empty).

    Args:
        dest: Final path of the artifact. Parent folders are created.

    Yields:
        A path in the same folder to write to.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"cannot write {dest}: it is a directory")
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        _remove_empty(created)
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; artifacts should get the usual permissions (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        _remove_empty(created)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are still empty; stop at the first that is not."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create output folder ``path`` (and parents), or raise one clear :class:`InputError`.

    Args:
        path: Folder to create.

    Returns:
        The folder.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {p}: {exc.strerror or exc}") from None
    return p


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file (after resolving symlinks and ``..``; hard links too)."""
    pa, pb = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def check_not_input(outputs: Iterable[str | os.PathLike[str] | None],
                    inputs: Iterable[str | os.PathLike[str] | None], what: str = "--out") -> None:
    """Refuse to write over an input of the same command (``quantize x.onnx --out x.onnx``).

    Args:
        outputs: Files the command writes (``None`` entries are skipped).
        inputs: Files it reads (model, weights, data, tables; ``None`` entries are skipped).
        what: The option naming the output, for the message.

    Raises:
        ConfigError: An output is one of the inputs.
    """
    ins = [Path(i) for i in inputs if i is not None and str(i)]
    for out in outputs:
        if out is None:
            continue
        for i in ins:
            if same_file(out, i):
                raise ConfigError(f"{what} {out} is the input file {i}: trtopt never writes over its input; "
                                  "write to another path")


def check_writable(dest: str | os.PathLike[str], folder: bool = False,
                   inputs: Iterable[str | os.PathLike[str] | None] = (), what: str = "--out") -> Path:
    """Fail fast: raise one clear :class:`InputError` unless ``dest`` can be written (checked before any work).

    Probes the nearest existing folder on the way with a temporary file (creating nothing), which
    also catches paths that exist but refuse files (``/proc``, a read-only mount) whatever the
    permissions say (root passes every ``os.access`` check).

    Args:
        dest: Output file (or, with ``folder=True``, output folder).
        folder: ``dest`` is a folder.
        inputs: The command's input files: an output file that is one of them is refused
            (:func:`check_not_input`).
        what: The option naming ``dest``, for messages.

    Returns:
        ``dest`` as a Path.

    Raises:
        ConfigError: ``dest`` is one of ``inputs``.
        InputError: ``dest`` cannot be written.
    """
    p = Path(dest)
    if not folder:
        check_not_input([p], inputs, what)
    if folder and p.exists() and not p.is_dir():
        raise InputError(f"output folder {p} is an existing file")
    if not folder and p.is_dir():
        raise InputError(f"output {p} is a directory; give a file path")
    where = (p if folder else p.parent).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise InputError(f"cannot write {p}: {where} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=".trtopt-probe-"):
            pass
    except OSError as exc:  # name what was asked for, and the folder on its way that refuses
        raise InputError(f"cannot write {p}: {where} does not accept new files ({exc.strerror or exc})") from None
    return p


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically.

    Args:
        dest: Destination path.
        data: Bytes to write.

    Returns:
        The destination path.
    """
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``dest`` atomically.

    Args:
        dest: Destination path.
        text: Text to write.

    Returns:
        The destination path.
    """
    return atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``dest`` atomically.

    Args:
        dest: Destination path.
        obj: A JSON-serialisable object.

    Returns:
        The destination path.
    """
    return atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of a file's contents, read in chunks.

    Args:
        path: File to hash.

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
