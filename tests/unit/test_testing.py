"""The trtopt pytest plugin (fixture ``trtopt_report`` + ReportCheck assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trtopt.testing import ReportCheck


def _row(name, precision, tput, acc, batch=8, backend="onnxruntime", status="ok"):
    return {"name": name, "backend": backend, "precision": precision, "sparsity": "dense", "batch_size": batch,
            "throughput_sps": tput, "latency_ms": {"p50": 1}, "timing": {},
            "accuracy": {"metric": "top1", "value": acc},
            "fidelity": {}, "vs_fp32": {}, "artifact": None, "status": status, "reason": "" if status == "ok" else "r"}


REPORT = {"schema": "trtopt.report/1", "created": "x", "environment": {}, "workload": {},
          "variants": [_row("fp32", "fp32", 1000.0, 97.0), _row("int8", "int8", 2000.0, 96.5),
                       _row("fp32", "fp32", 100.0, 97.0, batch=1), _row("int8", "int8", 110.0, 96.5, batch=1)]}


def test_assert_variant_passes_and_fails_with_clear_messages():
    r = ReportCheck(REPORT, "r.json")
    assert r.assert_variant("int8", min_accuracy_ratio=0.99, min_speedup=1.8)["batch_size"] == 8  # largest batch
    with pytest.raises(AssertionError, match=r"int8 \(onnxruntime, batch 1\): speedup 1.10x < 1.8x"):
        r.assert_variant("int8", min_speedup=1.8, batch_size=1)
    with pytest.raises(AssertionError, match=r"99.48% of FP32 97.00 < 99.9%"):
        r.assert_variant("int8", min_accuracy_ratio=0.999)
    with pytest.raises(AssertionError, match="accuracy drop 0.50 points > 0.2"):
        r.assert_variant("int8", max_accuracy_drop=0.2)
    with pytest.raises(AssertionError, match="no variant 'fp16'"):
        r.assert_variant("fp16")


def test_fixture_loads_report_and_rejects_other_schema(trtopt_report, tmp_path):
    p = tmp_path / "report.json"
    p.write_text(json.dumps(REPORT))
    trtopt_report(p).assert_variant("int8", min_accuracy_ratio=0.99, min_speedup=1.8)


def test_plugin_in_a_user_test_session(tmp_path):
    # the plugin is loaded through the installed pytest11 entry point, as in a user's project
    p = tmp_path / "report.json"
    p.write_text(json.dumps(REPORT))
    (tmp_path / "test_user.py").write_text(
        "def test_int8(trtopt_report):\n"
        "    trtopt_report().assert_variant('int8', min_accuracy_ratio=0.99, min_speedup=1.8)\n"
        "def test_int8_fast(trtopt_report):\n"
        "    trtopt_report().assert_variant('int8', min_speedup=3)\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "--trtopt-report", str(p),
                          str(tmp_path / "test_user.py"), "-o", "addopts=", "--rootdir", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert "1 failed, 1 passed" in res.stdout, res.stdout + res.stderr
    assert "speedup 2.00x < 3x" in res.stdout
    v2 = dict(REPORT, schema="trtopt.report/3")
    p.write_text(json.dumps(v2))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "--trtopt-report", str(p),
                          str(tmp_path / "test_user.py"), "-o", "addopts=", "--rootdir", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert "trtopt.report/3" in res.stdout and "2 failed" in res.stdout, res.stdout
