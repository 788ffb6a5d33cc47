"""Models stored with external data: calibrate -> quantize -> fp16 end to end.

The >2 GB code paths (external-data augmented model for ONNX Runtime, hashing without
serializing, automatic external-data saves) are exercised on a small model by lowering the
protobuf limit; one real >2 GB model runs under the ``slow`` marker.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import trtopt.onnx.io as onnx_io
from _helpers.external_data import write_external_data_model
from trtopt.cli.main import main
from trtopt.onnx.external import external_tensor_bytes, inline_tensor_bytes, model_hash_on_disk
from trtopt.onnx.io import load_onnx, save_onnx, uses_external_data

F32 = TensorProto.FLOAT


def _model(hidden: int = 64, dim: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((dim, hidden)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((hidden, 4)) * 0.3).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", F32, ["N", dim])],
                          [helper.make_tensor_value_info("y", F32, ["N", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("over_limit", [False, True], ids=["external-data", "over-protobuf-limit"])
def test_calibrate_quantize_fp16_on_external_data(tmp_path, monkeypatch, over_limit):
    m = _model()
    src = save_onnx(m, tmp_path / "src" / "m.onnx", external_data=True)
    assert uses_external_data(onnx.load(str(src), load_external_data=False))
    if over_limit:  # every model counts as "over 2 GB": serialization is never possible
        monkeypatch.setattr(onnx_io, "PROTO_LIMIT_BYTES", 200)
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    monkeypatch.chdir(tmp_path)  # data must be found beside the model, not in the working folder
    assert main(["calibrate", str(src), "--data", str(tmp_path / "calib.npz"), "--method", "minmax",
                 "--out", str(tmp_path / "cal")]) == 0
    table = json.loads((tmp_path / "cal" / "m.calib.json").read_text())
    # the input's range is its max |x| (minmax), computed independently
    assert table["amax"]["x"] == pytest.approx(float(np.abs(x).max()), rel=1e-6)
    assert str(table["model_hash"]).startswith("ext:") == over_limit
    q, f = tmp_path / "out" / "q.onnx", tmp_path / "out" / "f.onnx"
    assert main(["quantize", str(src), "--calib", str(tmp_path / "cal" / "m.calib.json"), "--out", str(q)]) == 0
    assert main(["quantize", str(src), "--fp16", "--calib-data", str(tmp_path / "calib.npz"), "--out", str(f)]) == 0
    expected = sorted(["q.onnx", "f.onnx"] + (["q.onnx.data", "f.onnx.data"] if over_limit else []))
    assert _files(tmp_path / "out") == expected  # no temp files left, data files beside the models
    ref = ReferenceEvaluator(m).run(None, {"x": x[:8]})[0]
    for path, tol in ((q, 0.05), (f, 0.01)):
        onnx.checker.check_model(str(path), full_check=True)
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x[:8]})[0]
        assert np.abs(out - ref).max() <= tol * np.abs(ref).max(), path.name
    assert uses_external_data(onnx.load(str(f), load_external_data=False)) == over_limit


def test_missing_external_data_is_one_clear_error(tmp_path):
    src = save_onnx(_model(), tmp_path / "m.onnx", external_data=True)
    (tmp_path / "m.onnx.data").unlink()
    from trtopt.errors import InputError

    with pytest.raises(InputError, match="external data"):
        load_onnx(src)


def _mixed_model(dim: int = 16) -> onnx.ModelProto:
    """An MLP whose tensors are big (external) and small (kept inline by the save), initializers and a Constant."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal((dim, 64)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(64).astype(np.float32) * 0.1, "b")  # 256 bytes: inline
    c = helper.make_node("Constant", [], ["w2"], name="c2", value=numpy_helper.from_array(
        rng.standard_normal((64, 8)).astype(np.float32), "w2"))
    nodes = [c, helper.make_node("MatMul", ["x", "w"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", F32, ["N", dim])],
                          [helper.make_tensor_value_info("y", F32, ["N", 8])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_calibration_over_the_limit_reads_no_weight_and_matches_the_loaded_model(tmp_path, monkeypatch):
    """Over the limit the weights stay on disk, and the table (ranges, hash) is the one of the loaded model."""
    from onnx import external_data_helper

    from trtopt.calib import CalibrationConfig, NumpySource, calibrate

    src = save_onnx(_mixed_model(), tmp_path / "m.onnx", external_data=True)
    monkeypatch.setattr(onnx_io, "PROTO_LIMIT_BYTES", 200)
    x = np.random.default_rng(3).standard_normal((32, 16)).astype(np.float32)
    loaded = load_onnx(src)
    cfg = CalibrationConfig(method="minmax")
    expected = calibrate(loaded, NumpySource({"x": x}), cfg).to_dict()  # weights in memory (the reference)
    reads = []
    real_read = external_data_helper._read_external_data_bytes
    monkeypatch.setattr(external_data_helper, "_read_external_data_bytes",
                        lambda t, d: reads.append(t.name) or real_read(t, d))
    got = calibrate(src, NumpySource({"x": x}), cfg).to_dict()
    assert reads == []  # no tensor was read into this process
    assert got["model_hash"].startswith("ext:") and got == expected
    assert model_hash_on_disk(onnx.load(str(src), load_external_data=False), tmp_path) == \
        onnx_io.model_hash(loaded)


def test_tensor_payload_from_dims_decides_the_size_check(monkeypatch):
    """The in-memory tensor bytes, counted from dims, and ``fits_protobuf`` on either side of the limit."""
    m = _model()
    payload = 4 * (16 * 64 + 64 * 4)
    assert inline_tensor_bytes(m) == payload
    monkeypatch.setattr(onnx_io, "PROTO_LIMIT_BYTES", payload - 1)
    assert not onnx_io.fits_protobuf(m)
    monkeypatch.setattr(onnx_io, "PROTO_LIMIT_BYTES", m.ByteSize())
    assert onnx_io.fits_protobuf(m)


@pytest.mark.slow
def test_real_model_over_2gb_calibrates_and_converts(tmp_path):
    """A real 2.1 GB model: calibrate (weights memory-mapped by ONNX Runtime), quantize and FP16, saved and run.

    Each stage's own checks are the proof of validity: ``save_onnx`` passes every file through the
    full checker and ONNX Runtime (by path) before it exists; the test adds the numbers.
    """
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    from trtopt.quant import QuantizeConfig, convert_fp16, quantize_qdq

    dim = 1 << 14  # two 16384 x 16384 float32 weights = 2.15 GB
    src = write_external_data_model(tmp_path / "big.onnx", dim, 1e-4)
    # over protobuf's limit by its weights alone (read from the file's tensor entries, not loaded)
    assert external_tensor_bytes(onnx.load(str(src), load_external_data=False), tmp_path) >= 2**31
    x = np.ones((1, dim), np.float32)
    table = calibrate(src, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    # ranges of the real data flow: x is 1, h = x @ w1 = dim * 1e-4 per element (ONNX Runtime ran the graph)
    assert table.amax["x"] == 1.0 and table.amax["h"] == pytest.approx(dim * 1e-4, rel=1e-3)
    assert table.model_hash.startswith("ext:")  # hashed tensor by tensor: the model cannot be serialized
    q = save_onnx(quantize_qdq(src, table, QuantizeConfig()).model, tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx.data").is_file()  # float weights behind Q/DQ: still over 2 GB, external data
    f = save_onnx(convert_fp16(src).model, tmp_path / "f.onnx")
    assert not (tmp_path / "f.onnx.data").exists()  # FP16 halves it below 2 GB: a single file
    # the saved models compute y = (x @ w1) @ w2 = dim^2 * 1e-8 per element in ONNX Runtime
    for path, rtol in ((q, 0.02), (f, 2e-3)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], dim * dim * 1e-8, rtol=rtol, err_msg=path.name)
        del sess


def test_models_from_a_path_over_the_limit_equal_those_from_the_caller_s_proto(tmp_path, monkeypatch):
    """The path route (weights owned, hashed from disk, no copy) writes byte-identical Q/DQ and FP16 models."""
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    from trtopt.quant import QuantizeConfig, convert_fp16, quantize_qdq

    src = save_onnx(_mixed_model(), tmp_path / "m.onnx", external_data=True)
    monkeypatch.setattr(onnx_io, "PROTO_LIMIT_BYTES", 200)
    x = np.random.default_rng(4).standard_normal((32, 16)).astype(np.float32)
    table = calibrate(src, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    loaded = load_onnx(src)
    before = loaded.SerializeToString()
    q_path, q_proto = (quantize_qdq(m, table, QuantizeConfig()).model for m in (src, loaded))
    f_path, f_proto = convert_fp16(src).model, convert_fp16(loaded).model
    assert loaded.SerializeToString() == before  # the caller's proto is never changed
    assert q_path.SerializeToString() == q_proto.SerializeToString()
    assert f_path.SerializeToString() == f_proto.SerializeToString()


def test_int8_weights_in_blocks_equal_one_pass():
    """Blocked INT8 rounding gives the bits of the one-pass float64 formula, per tensor and per channel."""
    from trtopt.quant.qdq import _int8

    w = (np.random.default_rng(5).standard_normal((37, 5, 3)) * 3).astype(np.float32)
    w[0, 0, 0], w[1, 0, 0] = 0.5 * 0.02, 1e6  # a tie (round half to even) and a saturated value
    for scale in (np.float32(0.02).reshape(1, 1, 1), (np.arange(1, 38, dtype=np.float32) / 50).reshape(-1, 1, 1),
                  (np.arange(1, 6, dtype=np.float32) / 50).reshape(1, -1, 1)):
        ref = np.clip(np.rint(w.astype(np.float64) / scale), -128, 127).astype(np.int8)
        np.testing.assert_array_equal(_int8(w, scale, block=16), ref)
