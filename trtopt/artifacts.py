"""A run's output folder written as one unit: after a run it holds that run's artifacts, or the previous run's.

:class:`RunOutput` wraps a pipeline run (``trtopt run``, ``trtopt demo``, :func:`trtopt.run_recipe`):

- On entry, the artifacts of an earlier run in the folder (the files the run *can* write, named by
  the caller: ``models/fp16.onnx``, ``calibration/dense.calib.json``, ``report.json`` ...) are moved
  aside into ``.trtopt-previous-run/``. Nothing the new run reads or writes can be an earlier run's
  file, so no stale artifact (an ``fp16.onnx`` of another model or other options) is ever reused or
  left beside the new report.
- On success, the earlier run's files are deleted: the folder holds exactly this run's artifacts.
- On any exception, Ctrl-C (``KeyboardInterrupt``) included, every file and folder the run created
  under the folders it writes is removed and the earlier run's files are put back: nothing
  half-finished remains, and a complete earlier run stays complete.

A run killed outright (``SIGKILL``) leaves ``.trtopt-previous-run/``; the next run first restores it
and removes what the killed run wrote (every file with an artifact name outside it is the killed
run's: its start moved all the others aside).

Files that are not artifacts of the run (a user's own files in the folder) are never moved or removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from trtopt.log import get_logger

log = get_logger(__name__)

#: folder (inside the run's output folder) holding the previous run's artifacts while a run is under way
PREVIOUS = ".trtopt-previous-run"


class RunOutput:
    """Context manager making a run's writes to ``out`` all-or-nothing.

    Args:
        out: The run's output folder.
        artifacts: Relative paths of every file the run may write (its artifacts); earlier versions of
            them are moved aside for the run and deleted when it succeeds.
        folders: Relative folders the run writes into (``models``, ``calibration``, ``engines``):
            on failure every file or folder the run created inside them is removed, and each of these
            folders (and ``out`` itself) the run created is removed.
        inputs: Files the run reads (model, weights, data): an artifact path among them is refused
            before anything moves (the run would write over, or move away, its own input).

    Example::

        with RunOutput(out, ["report.json", "models/fp16.onnx"], ["models"]):
            ...  # write the artifacts
    """

    def __init__(self, out: str | os.PathLike[str], artifacts: Iterable[str | os.PathLike[str]],
                 folders: Iterable[str | os.PathLike[str]] = (),
                 inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
        self.out = Path(out)
        self.artifacts = sorted({Path(a) for a in artifacts})
        self.folders = sorted({Path(f) for f in folders})
        self.backup = self.out / PREVIOUS
        self.inputs = [i for i in inputs if i]
        self._existed: set[Path] = set()
        self._before: set[Path] = set()
        self._moved: list[Path] = []

    # -- what is there ---------------------------------------------------------------------------
    def _present(self) -> set[Path]:
        """Every artifact file and every path inside the run's folders, relative to ``out``."""
        found = {a for a in self.artifacts if (self.out / a).is_file() or (self.out / a).is_symlink()}
        for f in self.folders:
            root = self.out / f
            if root.is_dir():
                found |= {p.relative_to(self.out) for p in root.rglob("*")}
        return found

    def _recover(self) -> None:
        """Restore the backup of a run that was killed before it could commit or roll back."""
        if not self.backup.is_dir():
            return
        log.warning("%s: an earlier run was interrupted; restoring the run before it", self.out)
        saved = {p.relative_to(self.backup) for p in self.backup.rglob("*") if p.is_file()}
        for a in self.artifacts:  # every artifact outside the backup was written by the killed run
            if a not in saved:
                (self.out / a).unlink(missing_ok=True)
        self._restore(sorted(saved))

    def _restore(self, names: Iterable[Path]) -> None:
        for a in names:
            src, dest = self.backup / a, self.out / a
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        shutil.rmtree(self.backup, ignore_errors=True)

    # -- the transaction ---------------------------------------------------------------------------
    def __enter__(self) -> RunOutput:
        from trtopt.fileio import check_not_input

        check_not_input([self.out / a for a in self.artifacts], self.inputs, what="run output")
        self._recover()
        self._existed = {p for p in (Path("."), *self.folders) if (self.out / p).is_dir()}
        self._before = self._present()
        for a in self.artifacts:
            if a in self._before:
                dest = self.backup / a
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.out / a, dest)
                self._moved.append(a)
        self._before -= set(self._moved)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            shutil.rmtree(self.backup, ignore_errors=True)  # the previous run's artifacts: superseded
            return
        with _sigint_ignored():  # a second Ctrl-C must not stop the clean-up half-way
            self.rollback()

    def rollback(self) -> None:
        """Remove what the run created, then put the previous run's artifacts back."""
        created = sorted(self._present() - self._before, key=lambda p: len(p.parts), reverse=True)
        for rel in created:  # deepest first: files, then the folders that held them
            p = self.out / rel
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        self._restore(self._moved)
        for f in sorted(set(self.folders) - self._existed, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                (self.out / f).rmdir()  # created by the run; empty now unless someone else wrote there
        if Path(".") not in self._existed:
            with contextlib.suppress(OSError):
                self.out.rmdir()
        log.debug("%s: removed %d path(s) the run wrote", self.out, len(created))


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT for the block (main thread only: signal handlers are set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
