"""bench/gpu_check.py: every GPU check in one command, runnable end to end on a machine without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _helpers.paths import REPO_ROOT, load_bench_module

torch = pytest.importorskip("torch")
SCRIPT = REPO_ROOT / "bench" / "gpu_check.py"


def test_the_limits_fit_in_eight_minutes_and_every_step_writes_where_it_is_told():
    gc = load_bench_module("gpu_check")
    steps = gc.steps()
    assert sum(s.limit_s for s in steps) <= 480
    assert [s.name for s in steps][:2] == ["device", "gpu-tests"]
    for s in steps[2:]:  # the result files land in the work folder, not in the committed results
        assert "{parts}" in " ".join(s.argv), s.name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the clean skips of a machine without CUDA")
def test_without_a_gpu_every_gpu_step_is_skipped_cleanly_and_the_results_are_written(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {s["name"]: s["status"] for s in data["steps"]}
    assert status.pop("device") == "ok" and data["device"]["gpu"].startswith("none")
    assert set(status.values()) == {"skipped"}, status
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| gpu-tests | skipped |" in md and "Traceback" not in (tmp_path / "gpu_check.log").read_text()


def test_an_unknown_step_is_one_line_and_exit_2(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--only", "int8-gemm,nope"],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "gpu_check: unknown step(s) nope (steps: calib-collector, device, gpu-tests, int8-gemm, runner-overhead, "
        "semi-structured)"]
