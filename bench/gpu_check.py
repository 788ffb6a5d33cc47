"""Every GPU check of the project in one command, each with its own time limit, within 8 minutes.

For the day a GPU machine is lent (no TensorRT, no package registry: everything it needs is in
the repository). The steps, in order, each a subprocess with a hard limit (seconds):

====================  =====  ====================================================================
step                  limit  what
====================  =====  ====================================================================
device                   20  GPU, driver, CUDA, torch, clocks (``bench/gpu_env.py``)
gpu-tests               150  ``pytest -m gpu`` over the files with GPU tests (TensorRT ones skip)
calib-collector         120  torch collector on CUDA vs ONNX Runtime CPU: entropy amax of every
                             tensor (the docs state identical counts, so the amax difference must
                             be 0) and its time against plain torch inference on CUDA (the floor)
semi-structured          60  2:4 ``to_sparse_semi_structured`` vs dense FP16 linear, large shapes
int8-gemm                60  ``torch._int_mm`` vs FP16 matmul, large shapes, exactness checked
runner-overhead          60  trtopt's timing vs a bare CUDA-event loop, eager and CUDA graphs
====================  =====  ====================================================================

A step that needs CUDA on a machine without it is ``skipped`` (with the reason), never failed; a
step past its limit is ``timeout`` and the next one runs. Results land in three files (the device
tool brings back at most 8): ``OUT/gpu_check.json`` (the device record, every step's status,
seconds, output tail and result JSON), ``OUT/gpu_check.md`` (the steps and every result table) and
``OUT/gpu_check.log`` (all output).

Run:  PYTHONPATH=. python3 bench/gpu_check.py --out bench/results/gpu   [--only STEP,STEP]
Exit 0 when no step failed or timed out (skips are fine), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GPU_TEST_FILES = ["tests/gpu", "tests/unit/backends/test_torch_runner.py",
                  "tests/unit/benchmark/test_gpu_conditions.py"]
SKIP_WORDS = ("skipped: no CUDA", "no CUDA GPU: skipped", "no sparse tensor cores")


@dataclass
class Step:
    """One check: its command (``{py}`` = this interpreter, ``{parts}`` = the work folder) and limit."""

    name: str
    limit_s: int
    argv: list[str]
    results: list[str] = field(default_factory=list)  # JSON files under {parts} it writes
    status: str = "not run"
    seconds: float | None = None
    rc: int | None = None
    tail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def steps() -> list[Step]:
    """The checks, in order (their limits add up to 470 s)."""
    py = sys.executable
    return [
        Step("device", 20, [py, str(BENCH / "gpu_env.py"), "{parts}/device.json"], ["device.json"]),
        Step("gpu-tests", 150, [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-o",
                                "addopts=--strict-markers -ra --import-mode=importlib",
                                "--junitxml={parts}/gpu_tests.xml", *GPU_TEST_FILES]),
        Step("calib-collector", 120, [py, str(BENCH / "calib_torch_collector.py"), "--runs",
                                      "resnet18:256:224:ort-cpu+torch-cuda-floor+torch-cuda", "--repeat", "1",
                                      "--require-cuda",
                                      "--out", "{parts}"], ["torch_collector.json"]),
        Step("semi-structured", 60, [py, str(BENCH / "gpu_semi_structured.py"), "--out", "{parts}"],
             ["gpu_semi_structured.json"]),
        Step("int8-gemm", 60, [py, str(BENCH / "gpu_int8_gemm.py"), "--out", "{parts}"], ["int8_gemm.json"]),
        Step("runner-overhead", 60, [py, str(BENCH / "gpu_runner_overhead.py"), "--out", "{parts}"],
             ["runner_overhead.json"]),
    ]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def run_step(step: Step, parts: Path, log) -> None:
    """Run one step under its limit; fill its status, seconds, output tail and results."""
    argv = [a.replace("{parts}", str(parts)) for a in step.argv]
    if step.name == "gpu-tests" and importlib.util.find_spec("pytest") is None:
        step.status, step.seconds, step.tail = "skipped", 0.0, "pytest is not installed: pip install -e '.[dev]'"
        log.write(f"\n===== {step.name}: {step.tail}\n")
        return
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    log.write(f"\n===== {step.name} (limit {step.limit_s} s): {' '.join(argv)}\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=step.limit_s)
        out, step.rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        step.rc, step.status = None, "timeout"
    step.seconds = round(time.perf_counter() - t0, 1)
    log.write(out)
    step.tail = "\n".join(out.strip().splitlines()[-8:])
    if step.status != "timeout":
        pytest_no_tests = step.name == "gpu-tests" and step.rc == 5
        skipped = any(w in out for w in SKIP_WORDS) or (step.name == "gpu-tests" and not _cuda())
        step.status = "skipped" if (step.rc in (0, 5) and skipped) or pytest_no_tests else \
            ("ok" if step.rc == 0 else "failed")
    for name in step.results:
        f = parts / name
        if f.is_file():
            step.data[name] = json.loads(f.read_text())
    if step.name == "gpu-tests":
        step.data["junit"] = _junit(parts / "gpu_tests.xml")


def _junit(path: Path) -> dict[str, int]:
    """Test counts from pytest's JUnit XML (empty when it was not written)."""
    if not path.is_file():
        return {}
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _markdown(record: dict[str, Any], done: list[Step], parts: Path) -> str:
    dev = record.get("gpu", "?")
    lines = ["# GPU checks", "", f"Device: {dev}; driver {record.get('driver')}; torch {record.get('torch')} "
             f"(CUDA {record.get('cuda')}); host {record.get('host')}.", "",
             "| step | status | seconds | limit s | note |", "|---|---|---:|---:|---|"]
    for s in done:
        note = s.tail.splitlines()[-1][:160].replace("|", "/") if s.tail else ""
        if s.name == "device":
            note = str(dev)
        lines.append(f"| {s.name} | {s.status} | {s.seconds} | {s.limit_s} | {note} |")
    for md in sorted(parts.glob("*.md")):
        lines += ["", md.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="results folder (bench/results/gpu to commit them)")
    ap.add_argument("--only", default="", help="comma-separated step names (default: all)")
    args = ap.parse_args()
    todo = steps()
    if args.only:
        names = {s.name for s in todo}
        unknown = set(args.only.split(",")) - names
        if unknown:
            print(f"gpu_check: unknown step(s) {', '.join(sorted(unknown))} (steps: {', '.join(sorted(names))})",
                  file=sys.stderr)
            return 2
        todo = [s for s in todo if s.name in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as td, open(args.out / "gpu_check.log", "w") as log:
        parts = Path(td)
        for s in todo:
            run_step(s, parts, log)
            print(f"{s.name:16s} {s.status:8s} {s.seconds:7.1f} s (limit {s.limit_s} s)", flush=True)
        record = next((s.data.get("device.json") for s in todo if s.name == "device"), None) or {}
        result = {"device": record, "total_s": round(time.perf_counter() - t0, 1),
                  "steps": [asdict(s) | {"argv": [a.replace("{parts}", "PARTS") for a in s.argv]} for s in todo]}
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "gpu_check.md").write_text(_markdown(record, todo, parts))
    bad = [s.name for s in todo if s.status in ("failed", "timeout")]
    print(f"gpu_check: {len(todo) - len(bad)} of {len(todo)} steps ok or skipped in {result['total_s']} s"
          + (f"; failed: {', '.join(bad)}" if bad else "") + f"; results in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
