"""``trtopt quantize --repair``: the repaired INT8 model is written; a bad value is one line and exit 2."""

from __future__ import annotations

import numpy as np
import onnx

from _helpers.onnx_models import tiny_conv_net
from trtopt.cli.main import main
from trtopt.onnx.exec import make_session


def _calibrated(tmp_path):
    path = tiny_conv_net(tmp_path / "net.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (32, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x)
    assert main(["calibrate", str(path), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "c")]) == 0
    return path, tmp_path / "c" / "net.calib.json"


def test_repair_bias_writes_a_model_with_corrected_biases(tmp_path, capsys):
    path, table = _calibrated(tmp_path)
    out = tmp_path / "q.onnx"
    rc = main(["quantize", str(path), "--calib", str(table), "--calib-data", str(tmp_path / "d.npz"),
               "--no-fidelity-guard", "--repair", "bias", "--out", str(out)])
    assert rc == 0
    assert "repair: bias correction on 2 INT8 layer(s)" in capsys.readouterr().err
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    make_session(str(out))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3 and conv.input[2].endswith("_bias_corrected")
    rc = main(["quantize", str(path), "--calib", str(table), "--calib-data", str(tmp_path / "d.npz"),
               "--no-fidelity-guard", "--repair", "none", "--out", str(tmp_path / "p.onnx")])
    assert rc == 0
    assert len(next(n for n in onnx.load(str(tmp_path / "p.onnx")).graph.node if n.op_type == "Conv").input) == 2


def test_unknown_repair_is_one_line_and_a_nonzero_exit(tmp_path, capsys):
    path, table = _calibrated(tmp_path)
    capsys.readouterr()
    rc = main(["quantize", str(path), "--calib", str(table), "--repair", "bias,adarond", "--out",
               str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--repair" in err[0] and "adarond" in err[0]
    assert "unrecognized" not in err[0] and "none" in err[0]  # names the accepted values
    assert not (tmp_path / "q.onnx").exists()
