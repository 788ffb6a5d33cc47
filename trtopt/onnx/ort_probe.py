"""Crash-isolated ONNX Runtime load check: does a model file open the way trtopt's stages open it?

ONNX Runtime can end the process with a signal (SIGSEGV) instead of raising while it optimizes
a graph it accepted at load time, e.g. its ``MatmulTransposeFusion`` on an FP16 batch-transposing
``Transpose -> MatMul`` on the CPU (see :func:`trtopt.quant.fp16_patterns.ort_transpose_hazards`).
Checking a model with optimizations off, in-process, therefore proves little, and checking it
with them on, in-process, can kill the caller. :func:`probe_load` opens the model in a helper
process with :func:`trtopt.onnx.exec.make_session` -- the very function the stages use --
at both settings trtopt uses: graph optimizations off (calibration, FP16 overflow preview,
layer-wise comparison) and ONNX Runtime's default full optimization (``bench``, ``run``, the
fidelity guard). A crash ends only the helper and comes back as a :class:`LoadFailure`.

Cost: the helper is started once per process and reused (0.1-0.2 s: Python plus the onnxruntime
import; restarted after a crash, or after a model that made it hold over 1 GB so that memory goes
back); each check then costs two session creations on the CPU provider. A verified write of the
PP-OCRv4 recognizer takes 0.17 s instead of 0.09 s in-process with optimizations off, of a small
FP16 transformer 0.04 s instead of 0.03 s (2-core CI machine).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

#: The helper: one JSON request per line on stdin (``{"path": ...}``), JSON lines back on stdout.
_HELPER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from trtopt.onnx.exec import make_session
for line in sys.stdin:
    path = json.loads(line)["path"]
    reply = {"ok": True}
    for optimize in (False, True):
        print(json.dumps({"level": optimize}), flush=True)
        try:
            make_session(path, optimize=optimize)
        except Exception as exc:
            cause = exc.__cause__ or exc
            text = str(cause).strip()
            reply = {"ok": False, "level": optimize,
                     "error": text.splitlines()[0][:400] if text else type(cause).__name__}
            break
    try:
        import resource
        reply["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except ImportError:
        pass
    print(json.dumps(reply), flush=True)
"""
#: A helper that has held more than this (a large model's sessions) is ended after its answer.
_RESTART_KB = 1 << 20
_LEVELS = {False: "graph optimizations off", True: "ONNX Runtime's full graph optimization"}


@dataclass(frozen=True)
class LoadFailure:
    """Why ONNX Runtime could not open a model.

    Attributes:
        level: The session settings that failed, in words (``graph optimizations off`` or
            ``ONNX Runtime's full graph optimization``).
        message: ONNX Runtime's first error line, or the signal that ended the helper.
        crashed: ONNX Runtime ended the process (a signal) instead of raising.
    """

    level: str
    message: str
    crashed: bool

    def __str__(self) -> str:
        if not self.level:  # the helper itself could not start
            return self.message
        if self.crashed:
            return f"ONNX Runtime crashed ({self.message}) opening it with {self.level}"
        return f"{self.message} (with {self.level})"


class _Helper:
    """The long-lived helper process (one per trtopt process, started on first use)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.err = None
        self.served = 0
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the trtopt package
        if self.err is not None:
            self.err.close()
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the helper; quoted if it cannot start)
        self.proc = subprocess.Popen([sys.executable, "-c", _HELPER, root], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1)
        self.served = 0
        return self.proc

    def _start_failure(self, rc: int) -> LoadFailure:
        self.err.seek(0)
        lines = [ln.strip() for ln in self.err.read().decode(errors="replace").splitlines() if ln.strip()]
        why = f": {lines[-1][:300]}" if lines else ""
        return LoadFailure("", f"the ONNX Runtime load-check helper process could not start ({_signal_name(rc)}{why})",
                           True)

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def check(self, path: str) -> LoadFailure | None:
        with self.lock:
            for _ in range(2):  # a reused helper that died before answering is restarted once
                proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
                reused, level = self.served > 0, None
                try:
                    proc.stdin.write(json.dumps({"path": path}) + "\n")
                    proc.stdin.flush()
                    while True:
                        line = proc.stdout.readline()
                        if not line:
                            break
                        msg = json.loads(line)
                        if "ok" in msg:
                            self.served += 1
                            if msg.get("maxrss_kb", 0) > _RESTART_KB:  # give a large model's memory back now
                                self.close()
                            return None if msg["ok"] else LoadFailure(_LEVELS[msg["level"]], msg["error"], False)
                        level = msg["level"]
                except (OSError, ValueError):
                    pass
                rc = proc.wait()
                self.proc = None
                if level is None:
                    if reused:
                        continue
                    return self._start_failure(rc)
                return LoadFailure(_LEVELS[bool(level)], _signal_name(rc), True)
        return LoadFailure("", "the ONNX Runtime load-check helper process ended twice before answering", True)


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


_helper = _Helper()
atexit.register(_helper.close)


def probe_load(path: str | os.PathLike[str]) -> LoadFailure | None:
    """Open ``path`` in ONNX Runtime (CPU) as trtopt's stages do, in a helper process.

    Args:
        path: An ``.onnx`` file (external data is read beside it, as a user's runtime reads it).

    Returns:
        ``None`` when both sessions open, else the first :class:`LoadFailure` (a refusal or a crash).
    """
    return _helper.check(str(Path(path).resolve()))
