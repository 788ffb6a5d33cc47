"""Token ids are checked against the spec's value range before any runtime sees them; ONNX Runtime logs nothing raw."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.data_files import cnn_model, token_model
from trtopt.cli.main import main
from trtopt.dataset import (
    Dataset,
    load_npz,
    save_npz,
)
from trtopt.errors import InputError
from trtopt.inputs import (
    check_specs_against_onnx,
    parse_input_spec,
    parse_input_specs,
)

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


def test_graph_dims_without_a_size_accept_any_size(tmp_path):
    """specs_from_onnx gives a dynamic non-batch dim 1..1..1: checking data against a graph must not enforce it."""
    model = onnx.load(str(token_model(tmp_path / "tok.onnx")))
    for seq in (5, 20):
        ds = Dataset({"ids": np.ones((3, seq), np.int64)}, source="t.npz").check_onnx(model)
        assert ds.inputs["ids"].shape == (3, seq)
    # declared ranges (recipes, --input) are still enforced by Dataset.check
    with pytest.raises(InputError, match=r"t.npz: 'ids' has size 5 on axis 1, outside the declared range 16..128"):
        Dataset({"ids": np.ones((3, 5), np.int64)}, source="t.npz").check(
            parse_input_specs(["ids:int64:batchxseq=16..128"]))
    # dtype and rank are still checked against the graph, naming the file and its shape
    with pytest.raises(InputError, match=r"t.npz: 'ids' is int32; the model input is int64"):
        Dataset({"ids": np.ones((3, 5), np.int32)}, source="t.npz").check_onnx(model)
    with pytest.raises(InputError, match=r"t.npz: 'ids' has shape \[3, 5, 1\] \(rank 3\); the model input is "
                                         r"batchxseq \(rank 2\)"):
        Dataset({"ids": np.ones((3, 5, 1), np.int64)}, source="t.npz").check_onnx(model)


def test_fixed_batch_model_takes_a_file_of_samples(tmp_path):
    """A graph with a fixed batch of 1 still reads samples on axis 0 (calibration cuts calls to the fixed size)."""
    model = onnx.load(str(cnn_model(tmp_path / "b1.onnx", batch=1)))
    ds = Dataset({"img": np.zeros((16, 1, 8, 8), np.float64)}, source="f.npz").check_onnx(model)
    assert ds.inputs["img"].dtype == np.float32  # float data cast to the model's float type


# -- data format -------------------------------------------------------------------------------
def test_npz_round_trip_with_labels_and_static(tmp_path):
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    save_npz(tmp_path / "d.npz", {"ids": ids}, labels=np.array([0, 1]), static={"state": np.zeros((1, 4), np.float32)})
    ds = load_npz(tmp_path / "d.npz")
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1] and list(ds.static) == ["state"]
    np.testing.assert_array_equal(ds.inputs["ids"], ids)
    assert set(ds.take(slice(0, 1))) == {"ids", "state"}


@pytest.mark.parametrize(("arrays", "spec", "match"), [
    ({"tokens": np.zeros((2, 6), np.int32)}, "ids:int32:batchx6", r"no array for input\(s\) \['ids'\]"),
    ({"ids": np.zeros((2, 6), np.int64)}, "ids:int32:batchx6", "is int64; the model input is int32"),
    ({"ids": np.zeros((2, 7), np.int32)}, "ids:int32:batchx6", "size 7 on axis 1"),
    ({"ids": np.zeros((2, 6, 1), np.int32)}, "ids:int32:batchx6", "rank 3"),
    ({"ids": np.zeros((2, 6), np.int32), "extra": np.zeros(2)}, "ids:int32:batchx6", "not model inputs"),
])
def test_bad_data_named_in_words(tmp_path, arrays, spec, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_npz(tmp_path / "d.npz").check([parse_input_spec(spec)])


def test_float_data_is_cast_and_labels_required_when_asked(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2), np.float64))
    ds = load_npz(tmp_path / "d.npz").check([parse_input_spec("x:float32:batchx2")])
    assert ds.inputs["x"].dtype == np.float32
    with pytest.raises(InputError, match="no 'labels'"):
        ds.check([parse_input_spec("x:float32:batchx2")], need_labels=True)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_npz(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_npz(tmp_path / "missing.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(InputError, match="single array"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="pickled"):
        load_npz(tmp_path / "obj.npz")
    with pytest.raises(InputError, match="different numbers of samples"):
        Dataset({"a": np.zeros(3), "b": np.zeros(4)})
