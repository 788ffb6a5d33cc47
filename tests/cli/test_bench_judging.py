"""``trtopt bench`` judges each output by its kind: recognized from the graph, or declared with --output-kind."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from _helpers.judge_graphs import yolo_head
from trtopt.benchmark.config import BenchConfig
from trtopt.cli.main import main
from trtopt.errors import ConfigError

FAST = ["--warmup", "1", "--iterations", "5", "--no-plots"]


@pytest.fixture
def detectors(tmp_path):
    """FP32 YOLO-style head [N, 7, A] and a variant whose scores are perturbed; eval data [8, 8, 64]."""
    m = yolo_head()
    onnx.save(m, tmp_path / "fp32.onnx")
    ws = next(t for t in m.graph.initializer if t.name == "ws")
    ws.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(ws) * 1.02, "ws"))
    onnx.save(m, tmp_path / "var.onnx")
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(0).uniform(0, 1, (8, 8, 64)).astype(np.float32))
    return str(tmp_path / "fp32.onnx"), str(tmp_path / "var.onnx"), str(tmp_path / "eval.npz")


def test_a_detection_head_is_judged_by_detections_kept_and_reports_its_kind(detectors, tmp_path):
    fp32, var, data = detectors
    assert main(["bench", fp32, var, "--data", data, "--out", str(tmp_path / "o"), *FAST]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    row = next(v for v in rep["variants"] if v["name"] == "var")
    fid = row["fidelity"]["y"]
    assert fid["kind"] == "detection" and "Sigmoid" in fid["kind_reason"]
    assert {"kept", "precision", "fp32_detections"} <= set(fid["task"]) and "cosine" in fid
    assert "[detection: kept " in (tmp_path / "o" / "report.md").read_text()


def test_a_declared_kind_and_bad_declarations(detectors, tmp_path, capsys):
    fp32, var, data = detectors
    assert main(["bench", fp32, var, "--data", data, "--out", str(tmp_path / "o"), "--output-kind",
                 "y=detection:threshold=0.9,floor=0", *FAST]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert next(v for v in rep["variants"] if v["name"] == "var")["fidelity"]["y"]["kind_reason"].startswith(
        "detection (declared)")
    capsys.readouterr()
    assert main(["bench", fp32, "--data", data, "--out", str(tmp_path / "p"), "--output-kind", "y=frames:floor=x",
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "output kind option floor must be a float" in err and "Traceback" not in err


def test_recipe_output_kinds_are_checked_when_the_recipe_loads():
    assert BenchConfig(output_kinds={"y": "ctc:blank=3"}).declared_kinds()["y"].blank == 3
    with pytest.raises(ConfigError, match="unknown output kind"):
        BenchConfig(output_kinds={"y": "yolo"})
    with pytest.raises(ConfigError, match="must be a table"):
        BenchConfig(output_kinds=["y=ctc"])
