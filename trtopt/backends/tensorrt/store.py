"""Content-addressed engine store (``engines/`` by default).

Each entry is ``<model>.<precision>[.sparse].<key16>.engine`` plus a ``.json`` manifest beside it;
the manifest is written last, so an engine without a manifest is an interrupted build and is ignored.
Builds of the same key are serialized with a file lock, so two processes never build it twice.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.backends.tensorrt.manifest import load_manifest
from trtopt.errors import InputError
from trtopt.fileio import atomic_write_bytes, atomic_write_json, ensure_dir

DEFAULT_ROOT = Path("engines")
#: Seconds to wait for another process building the same key.
LOCK_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class StoreEntry:
    """Paths of one stored engine."""

    engine: Path
    manifest: Path


class EngineStore:
    """Engines keyed by :func:`~trtopt.backends.tensorrt.plan.cache_key`.

    Args:
        root: Folder holding engines and manifests (created on first write).
    """

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def entry(self, key: str, stem: str, precision: str, sparsity: bool = False) -> StoreEntry:
        """Paths for ``key`` (readable prefix + the first 16 hex digits of the key)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "model"
        name = f"{safe}.{precision.replace('+', '-')}{'.sparse' if sparsity else ''}.{key[:16]}"
        return StoreEntry(self.root / f"{name}.engine", self.root / f"{name}.json")

    def lookup(self, entry: StoreEntry, key: str) -> dict[str, Any] | None:
        """The manifest of a complete entry whose key matches, else ``None``."""
        if not (entry.engine.is_file() and entry.manifest.is_file()):
            return None
        try:
            manifest = load_manifest(entry.manifest)
        except InputError:
            return None
        return manifest if manifest.get("key") == key else None

    def lock(self, key: str, timeout: float = LOCK_TIMEOUT_S) -> Any:
        """A :class:`filelock.FileLock` serializing builds of ``key`` (use as a context manager)."""
        from filelock import FileLock

        ensure_dir(self.root)
        return FileLock(str(self.root / f".{key[:16]}.lock"), timeout=timeout)

    @contextlib.contextmanager
    def building(self, key: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the build lock of ``key``, then (success or failure) remove the lock file.

        The store folder itself is removed too when this call created it and it is still empty (a failed
        first build leaves no empty ``--engine-dir``).

        Removing the lock file is safe for correctness: engine and manifest are written atomically and
        :meth:`lookup` checks the key, so at worst a racing process builds the same key once more.
        """
        created = not self.root.exists()
        lock = self.lock(key, timeout)
        try:
            with lock:
                yield
        finally:
            with contextlib.suppress(OSError):
                Path(lock.lock_file).unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):  # not empty (an engine, another process's files): keep it
                    self.root.rmdir()

    def save(self, entry: StoreEntry, engine_bytes: bytes, manifest: dict[str, Any]) -> StoreEntry:
        """Write the engine, then the manifest, each atomically; an interrupted manifest write removes the engine.

        So a build killed mid-way leaves neither a partial file nor an engine without its manifest.
        """
        atomic_write_bytes(entry.engine, engine_bytes)
        try:
            atomic_write_json(entry.manifest, manifest)
        except BaseException:
            entry.engine.unlink(missing_ok=True)
            raise
        return entry


def manifest_path_for(engine: str | os.PathLike[str]) -> Path:
    """The manifest path beside an engine file (``x.engine`` -> ``x.json``)."""
    return Path(engine).with_suffix(".json")


def check_engine_file(path: str | os.PathLike[str]) -> bytes:
    """Read an engine file, rejecting things that are obviously not engines with one clear line.

    Returns:
        The file's bytes.

    Raises:
        InputError: Missing, empty, tiny, text/JSON or ONNX file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"engine file {p} is a directory" if p.is_dir() else f"engine file not found: {p}")
    data = p.read_bytes()
    if len(data) < 64:
        raise InputError(f"{p} is not a TensorRT engine ({len(data)} bytes)")
    if p.suffix.lower() == ".onnx" or (data[:1] == b"\x08" and b"onnx" in data[:256].lower()):
        raise InputError(f"{p} is an ONNX model, not an engine: build one with `trtopt build {p} --backend tensorrt`")
    head = data[:512]
    if head.lstrip()[:1] in (b"{", b"[") or all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        raise InputError(f"{p} is a text file, not a TensorRT engine")
    return data
