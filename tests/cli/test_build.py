"""``trtopt build --input SPEC`` takes the optimization profile from the input specs (real RTX build)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.cli.main import main


def _token_model(path):
    table = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["logits"])]
    g = helper.make_graph(nodes, "tok", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
                          [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")])
    from trtopt.onnx.io import save_onnx

    return save_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_build_without_profile_names_the_fix(tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx")
    model = _token_model(tmp_path / "tok.onnx")
    rc = main(["build", str(model), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "dynamic dimensions" in err and "Traceback" not in err


def test_build_profile_from_input_spec(tmp_path, capsys):
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("TensorRT for RTX is not installed")
    model = _token_model(tmp_path / "tok.onnx")
    rc = main(["build", str(model), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e"),
               "--input", "ids:int64:batch=1..4..8xseq=8..16..32:0..50"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads(next((tmp_path / "e").rglob("*.json")).read_text())
    prof = manifest["profiles"]["ids"]
    assert (prof["min"], prof["opt"], prof["max"]) == ([1, 8], [4, 16], [8, 32]), prof


def test_build_input_spec_contradicting_the_model_is_one_line(tmp_path, capsys):
    model = _token_model(tmp_path / "tok.onnx")
    rc = main(["build", str(model), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e"),
               "--input", "ids:int32:batchxseq=8..32"])
    err = capsys.readouterr().err
    assert rc == 2 and "declared int32 but the model takes int64" in err
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
