"""``bench --strict`` / ``run --strict``: exit 1 when a variant is marked ✗ or failed."""

from __future__ import annotations

import json

import numpy as np

from _helpers.onnx_models import detector_head
from trtopt.benchmark import AccuracyResult, Report, VariantResult, check_schema
from trtopt.benchmark.report import strict_problems
from trtopt.cli.main import main

FAST = ["--warmup", "1", "--iterations", "5", "--no-plots"]


def test_bench_strict_exits_1_on_a_broken_variant_after_writing_the_report(tmp_path, capsys):
    fp32 = detector_head(tmp_path / "fp32.onnx", 1.0, np.random.default_rng(3))
    broken = detector_head(tmp_path / "broken.onnx", 0.3, np.random.default_rng(3))  # clipped scores
    np.savez(tmp_path / "eval.npz", x=np.abs(np.random.default_rng(1).normal(size=(6, 8))).astype(np.float32))
    args = ["--data", str(tmp_path / "eval.npz"), *FAST]
    assert main(["bench", fp32, broken, "--out", str(tmp_path / "a"), "--strict", *args]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "--strict: 1 variant(s) not ok: broken@1 (onnxruntime)" in err[0]
    assert "worst_channel_cosine" in err[0]
    rep = json.loads((tmp_path / "a" / "report.json").read_text())  # the report is still written
    assert check_schema(rep)["schema"] == "trtopt.report/2"
    assert [v["fidelity_ok"] for v in rep["variants"] if v["name"] == "broken"] == [False]
    assert main(["bench", fp32, broken, "--out", str(tmp_path / "b"), *args]) == 0  # not strict: exit 0
    assert main(["bench", fp32, fp32, "--out", str(tmp_path / "c"), "--strict", *args]) == 0  # nothing broken


def test_strict_problems_lists_failed_and_skipped_variants():
    ok = AccuracyResult(metric="none", value=None, fidelity={"y": {"cosine": 1.0}})
    rep = Report(environment={}, workload={}, variants=[
        VariantResult("fp16", "onnxruntime", "fp16", batch_size=8, status="failed", reason="overflows"),
        VariantResult("trt", "tensorrt", "fp32", batch_size=8, status="skipped", reason="not installed"),
        VariantResult("trt", "tensorrt", "fp32", batch_size=16, status="skipped", reason="not installed"),
        VariantResult("int8", "onnxruntime", "int8", batch_size=8, accuracy=ok)])
    assert strict_problems(rep) == ["fp16@8 (onnxruntime): failed: overflows", "trt: skipped: not installed"]
