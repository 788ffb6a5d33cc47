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
from trtopt.cli.main import main
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


def _write_external_data_model(path, dim: int, value: float):
    """``y = (x @ w1) @ w2`` with two ``[dim, dim]`` float32 weights filled with ``value``, stored as external data.

    The weights are written straight to ``<path>.data`` (one block in memory at a time) and the model
    only points at them, so making a 2 GB model costs seconds and one weight's memory.
    """
    block = np.full((dim, dim), value, np.float32)
    data = path.with_name(path.name + ".data")
    with open(data, "wb") as f:
        for _ in range(2):
            block.tofile(f)
    del block
    inits = []
    for i, name in enumerate(("w1", "w2")):
        t = TensorProto(name=name, data_type=F32, dims=(dim, dim), data_location=TensorProto.EXTERNAL)
        for key, val in (("location", data.name), ("offset", str(i * dim * dim * 4)), ("length", str(dim * dim * 4))):
            t.external_data.add(key=key, value=val)
        inits.append(t)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", F32, ["N", dim])],
                          [helper.make_tensor_value_info("y", F32, ["N", dim])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.slow
def test_real_model_over_2gb_calibrates_and_converts(tmp_path):
    """A real 2.1 GB model: calibrate (augmented model by path), quantize and FP16 save as external data."""
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    from trtopt.quant import QuantizeConfig, convert_fp16, quantize_qdq

    dim = 1 << 14  # two 16384 x 16384 float32 weights = 2.15 GB
    src = _write_external_data_model(tmp_path / "big.onnx", dim, 1e-4)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 2**31
    onnx.checker.check_model(str(src), full_check=True)
    m = load_onnx(src)
    assert not onnx_io.fits_protobuf(m)
    del m
    x = np.ones((2, dim), np.float32)
    table = calibrate(src, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    assert table.amax["x"] == 1.0 and table.amax["h"] == pytest.approx(dim * 1e-4, rel=1e-3)
    q = save_onnx(quantize_qdq(src, table, QuantizeConfig()).model, tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx.data").is_file()
    f = convert_fp16(src).model
    assert save_onnx(f, tmp_path / "f.onnx") == tmp_path / "f.onnx"
    assert not (tmp_path / "f.onnx.data").exists()  # FP16 halves it below 2 GB: a single file
    del f
    out = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"x": x[:1]})[0]
    np.testing.assert_allclose(out, (dim * 1e-4) * dim * 1e-4, rtol=0.02)
