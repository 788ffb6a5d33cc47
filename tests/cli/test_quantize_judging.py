"""``trtopt quantize`` judges by output kind: --output-kind declares, --eval gives the guard held-out data."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers.onnx_models import fragile_mlp
from trtopt.cli.main import main


@pytest.fixture
def calibrated(tmp_path):
    path, x = fragile_mlp(tmp_path / "mlp.onnx", 1.0)
    np.savez(tmp_path / "calib.npz", x=x)
    assert main(["calibrate", str(path), "--data", str(tmp_path / "calib.npz"), "--method", "minmax",
                 "--out", str(tmp_path / "c")]) == 0
    return path, tmp_path / "c" / "mlp.calib.json", x


def test_an_unrecognized_output_is_reported_and_a_declared_one_is_judged_by_its_kind(tmp_path, capsys, calibrated):
    path, table, _ = calibrated
    capsys.readouterr()
    assert main(["quantize", str(path), "--calib", str(table), "--out", str(tmp_path / "q.onnx")]) == 0
    err = capsys.readouterr().err
    assert "output logits: not recognized, judged generically; declare with --output-kind" in err
    assert main(["quantize", str(path), "--calib", str(table), "--output-kind", "logits=classes:floor=90",
                 "--out", str(tmp_path / "q2.onnx")]) == 0
    assert "output logits: classes (declared); all-INT8 margin +" in capsys.readouterr().err


def test_eval_data_is_judged_held_out(tmp_path, capsys, calibrated):
    path, table, x = calibrated
    np.savez(tmp_path / "eval.npz", x=x[::-1] * 0.9)
    assert main(["quantize", str(path), "--calib", str(table), "--eval", str(tmp_path / "eval.npz"),
                 "--out", str(tmp_path / "q.onnx")]) == 0
    assert "within tolerance on 64 held-out samples" in capsys.readouterr().err


@pytest.mark.parametrize("flag, message", [
    (["--output-kind", "logits"], "--output-kind must be NAME=KIND[:options]"),
    (["--output-kind", "logits=boxes"], "unknown output kind 'boxes'"),
    (["--output-kind", "scores=classes"], "not outputs of the model"),
    (["--output-kind", "logits=classes", "--no-fidelity-guard"], "does not apply with --no-fidelity-guard"),
])
def test_bad_output_kinds_end_in_one_clear_line(tmp_path, capsys, calibrated, flag, message):
    path, table, _ = calibrated
    capsys.readouterr()
    rc = main(["quantize", str(path), "--calib", str(table), *flag, "--out", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not (tmp_path / "q.onnx").exists()
    if message:
        assert message in err
