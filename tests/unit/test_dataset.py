"""Token ids are checked against the spec's value range before any runtime sees them; ONNX Runtime logs nothing raw."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.cli.main import main
from trtopt.dataset import Dataset
from trtopt.errors import InputError
from trtopt.inputs import check_specs_against_onnx, parse_input_specs

pytest.importorskip("onnxruntime")

ROWS = 50


def _token_model(path):
    """ids [N, 6] int64 and mask [N, 6] -> embedding (50 rows) mean -> MatMul -> [N, 4]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((ROWS, 8)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")]
    n = helper.make_node
    nodes = [n("Gather", ["emb", "ids"], ["e"], name="/emb/Gather"), n("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
             n("Unsqueeze", ["m", "axes"], ["m3"]), n("Mul", ["e", "m3"], ["em"]),
             n("ReduceMean", ["em", "axes1"], ["pooled"], keepdims=0), n("MatMul", ["pooled", "w"], ["logits"])]
    inits += [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
              numpy_helper.from_array(np.array([1], np.int64), "axes1")]
    g = helper.make_graph(nodes, "tok", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6]),
                                         helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 6])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture
def token_files(tmp_path):
    model = _token_model(tmp_path / "tok.onnx")
    rng = np.random.default_rng(1)
    mask = np.ones((16, 6), np.int64)
    np.savez(tmp_path / "bad.npz", ids=rng.integers(0, 80, (16, 6)), mask=mask)  # ids past the 50 rows
    np.savez(tmp_path / "ok.npz", ids=rng.integers(0, ROWS, (16, 6)), mask=mask * 3)  # mask values: not checked
    return model, tmp_path


@pytest.mark.parametrize("command", ["bench", "calibrate", "quantize --calib-data"])
def test_out_of_range_token_ids_are_one_trtopt_line_before_onnx_runtime_runs(token_files, capfd, command):
    model, d = token_files
    argv = {"bench": ["bench", str(model), "--data", str(d / "bad.npz"), "--out", str(d / "o")],
            "calibrate": ["calibrate", str(model), "--data", str(d / "bad.npz"), "--out", str(d / "c")],
            "quantize --calib-data": ["quantize", str(model), "--fp16", "--calib-data", str(d / "bad.npz"),
                                "--out", str(d / "q.onnx")]}[command]
    assert main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()  # the process's stderr: ONNX Runtime's C++ log included
    assert len(err) == 1, err
    assert "'ids' holds values up to" in err[0] and f"must be below {ROWS}" in err[0] and "embedding" in err[0]


def test_data_in_range_passes_and_a_guessed_mask_range_is_not_enforced(token_files):
    model, d = token_files
    from trtopt.dataset import load_npz

    ds = load_npz(d / "ok.npz").check_onnx(model)
    assert ds.inputs["mask"].max() == 3


def test_declared_value_range_is_enforced_on_data():
    specs = parse_input_specs(["ids:int64:batchx6:0..10"])
    with pytest.raises(InputError, match=r"'ids' holds values up to 12; they must be below 10 \(declared ids:"):
        Dataset({"ids": np.full((2, 6), 12, np.int64)}, source="d.npz").check(specs)
    with pytest.raises(InputError, match="values down to -1; they must be at least 0"):
        Dataset({"ids": np.full((2, 6), -1, np.int64)}, source="d.npz").check(specs)


def test_a_declared_range_past_the_embedding_table_is_refused(token_files, capfd):
    model, d = token_files
    proto = onnx.load(str(model))
    with pytest.raises(InputError, match=r"declares values 0..80, but it indexes an embedding table of 50 rows"):
        check_specs_against_onnx(parse_input_specs(["ids:int64:batchx6:0..80", "mask:int64:batchx6"]), proto)
    assert main(["bench", str(model), "--input", "ids:int64:batchx6:0..80", "--out", str(d / "o")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert "embedding table of 50 rows" in err[-1] and not any("onnxruntime:" in e for e in err), err


def test_onnx_runtime_errors_print_no_raw_log_line(tmp_path, capfd):
    """A failure inside ONNX Runtime reaches the user as trtopt's one line, not ORT's coloured log first."""
    from trtopt.backends.onnxrt import OnnxRuntimeRunner

    n = helper.make_node
    g = helper.make_graph([n("Reshape", ["x", "shape"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
                          [numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "r.onnx"))
    with OnnxRuntimeRunner(tmp_path / "r.onnx") as r, pytest.raises(Exception):  # noqa: B017 (ORT's own type)
        r.infer({"x": np.ones((1, 8), np.float32)})  # 8 values do not reshape to [-1, 3]
    err = capfd.readouterr().err
    assert "onnxruntime" not in err.lower(), err
