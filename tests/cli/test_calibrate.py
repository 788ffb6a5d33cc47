"""``trtopt calibrate``: exit codes, one-line errors, ``--json`` output."""

from __future__ import annotations

import json

import numpy as np
import onnx

from _helpers.calib_graphs import matmul_model, state_model
from _helpers.data_files import token_model
from trtopt.cli.main import main


def test_cli_exits_2_with_one_line_on_an_empty_result(tmp_path, capsys):
    from trtopt.cli.main import main

    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(), str(path))
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 16), np.float32))
    rc = main(["calibrate", str(path), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"),
               "--collector", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no ranges" in err[0]
    assert not (tmp_path / "o" / "m.calib.json").exists()


def test_cli_json_prints_the_table_with_the_choices_and_static_inputs_work(tmp_path, capsys):

    from trtopt.cli.main import main

    path = tmp_path / "m.onnx"
    onnx.save(state_model([1, 1, 16]), str(path))
    x = np.random.default_rng(12).standard_normal((20, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, sr=np.float32(2.0), **{"static:state": np.ones((1, 1, 16), np.float32)})
    rc = main(["calibrate", str(path), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"),
               "--collector", "onnxruntime", "--static-input", "sr", "--batch-size", "8", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "auto" and d["tensors"]["hs"]["method"] and d["amax"]["hs"] <= np.abs((x + 1) * 2).max()


def test_calibrate_token_model_with_dynamic_seq(tmp_path, capsys):
    np.savez(tmp_path / "ids.npz", ids=np.random.default_rng(0).integers(0, 50, (24, 20)).astype(np.int64))
    assert main(["calibrate", str(token_model(tmp_path / "tok.onnx")), "--data", str(tmp_path / "ids.npz"),
                 "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "tok.calib.json").is_file()
