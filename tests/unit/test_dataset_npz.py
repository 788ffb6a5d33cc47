"""The one .npz data format: round trips, errors in words, float casts, and data checked against a graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from _helpers.data_files import cnn_model, token_model
from trtopt.dataset import Dataset, load_npz, save_npz
from trtopt.errors import InputError
from trtopt.inputs import parse_input_spec, parse_input_specs

pytest.importorskip("onnxruntime")


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
