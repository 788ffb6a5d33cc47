"""SmoothQuant: per-channel statistics from calibration, exact float rescaling, better INT8 on outliers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.calib import CalibrationConfig, CalibrationTable, NumpySource, calibrate
from trtopt.cli.main import main
from trtopt.errors import ConfigError, InputError
from trtopt.onnx.graph import consumers, producers
from trtopt.quant import QuantizeConfig, quantize_qdq, smooth_model, smoothing_scales

K, H, OUT = 16, 32, 8
OUTLIER = 3  # input channel with 40x larger values, like a transformer outlier feature


def _model() -> onnx.ModelProto:
    """x -> MatMul(w1) -> Relu -> h ; h -> Gemm(w2, transB) -> y ; x + MatMul(w3) residual -> z."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)
             for name, s in (("w1", (K, H)), ("w2", (OUT, H)), ("w3", (K, K)))]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w1"], ["m1"], name="/fc1/MatMul"),
        n("Relu", ["m1"], ["h"], name="/act/Relu"),
        n("Gemm", ["h", "w2"], ["y"], name="/fc2/Gemm", transB=1),
        n("MatMul", ["x", "w3"], ["m3"], name="/proj/MatMul"),
        n("Add", ["x", "m3"], ["z"], name="/res/Add"),
    ]
    g = helper.make_graph(nodes, "sq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", K])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _data(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, K)).astype(np.float32)
    x[:, OUTLIER] *= 40.0
    return x


@pytest.fixture(scope="module")
def setup():
    m = _model()
    x = _data(256, 1)
    table = calibrate(m, NumpySource({"x": x}, batch_size=32), CalibrationConfig(method="minmax"))
    return m, x, table


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y", "z"], {"x": x})


def test_calibration_records_per_channel_maxima(setup):
    m, x, table = setup
    assert set(table.channel_amax) == {"x", "h"}  # activations feeding MatMul/Gemm with constant weights
    np.testing.assert_allclose(table.channel_amax["x"], np.abs(x).max(axis=0), rtol=1e-6)
    h = ReferenceEvaluator(_with_output(m, "h")).run(None, {"x": x})[-1]
    np.testing.assert_allclose(table.channel_amax["h"], np.abs(h).max(axis=0), rtol=1e-5)
    assert not calibrate(m, NumpySource({"x": x}), CalibrationConfig(channel_stats=False)).channel_amax


def _with_output(m: onnx.ModelProto, name: str) -> onnx.ModelProto:
    c = onnx.ModelProto()
    c.CopyFrom(m)
    c.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return c


def test_smoothing_is_exact_in_float_and_only_feeds_the_matmuls(setup):
    m, x, table = setup
    sm = onnx.ModelProto()
    sm.CopyFrom(m)
    res = smooth_model(sm, table, alpha=0.8)
    onnx.checker.check_model(sm)
    assert set(res.smoothed) == {"x", "h"}
    for ref, got in zip(_run(m, x), _run(sm, x)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    prod, cons = producers(sm.graph), consumers(sm.graph)
    for node in sm.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            assert prod[node.input[0]].op_type == "Mul"
    assert sorted(n.name for n in cons["x"]) == ["/res/Add", "x_smooth_Mul"]  # the residual keeps the original x
    # the recorded range is exactly max|x / s| of the new tensor
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    s = smoothing_scales(table.channel_amax["x"], np.maximum(np.abs(w["w1"]).max(1), np.abs(w["w3"]).max(1)), 0.8)
    out = next(o for n in sm.graph.node if n.op_type == "Mul" and n.input[0] == "x" for o in n.output)
    np.testing.assert_allclose(res.amax[out], np.abs(x / s).max(), rtol=1e-5)


def test_smoothquant_int8_is_closer_to_fp32_on_outlier_channels(setup):
    m, _, table = setup
    xe = _data(128, 7)
    ref = _run(m, xe)
    errs = {}
    for alpha in (0.0, 0.8):
        q = quantize_qdq(m, table, QuantizeConfig(smoothquant_alpha=alpha)).model
        got = _run(q, xe)
        errs[alpha] = sum(float(((g - r) ** 2).sum() / (r**2).sum()) for g, r in zip(got, ref))
    assert errs[0.8] < errs[0.0] / 3, errs
    q = quantize_qdq(m, table, QuantizeConfig(smoothquant_alpha=0.8)).model
    prod = producers(q.graph)
    for node in q.graph.node:  # every weighted node still reads DQ on both inputs
        if node.op_type in ("MatMul", "Gemm"):
            assert [prod[i].op_type for i in node.input[:2]] == ["DequantizeLinear"] * 2
    q_in = {prod[prod[n.input[0]].input[0]].input[0] for n in q.graph.node if n.op_type in ("MatMul", "Gemm")}
    assert all(prod[t].op_type == "Mul" for t in q_in)  # Q reads the smoothed tensor


def test_excluded_nodes_are_not_smoothed(setup):
    m, _, table = setup
    q = quantize_qdq(m, table, QuantizeConfig(smoothquant_alpha=0.8, exclude_nodes=(r"/fc2/",))).model
    gemm = next(n for n in q.graph.node if n.op_type == "Gemm")
    assert gemm.input[0] == "h" and gemm.input[1] == "w2"


def test_table_roundtrip_and_validation(setup, tmp_path):
    _, _, table = setup
    p = table.save_json(tmp_path / "t.json")
    back = CalibrationTable.load_json(p)
    assert back.channel_amax.keys() == table.channel_amax.keys()
    np.testing.assert_allclose(back.channel_amax["x"], table.channel_amax["x"])
    import json

    d = json.loads(p.read_text())
    d["channel_amax"]["x"] = [1.0, -2.0]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="invalid channel_amax"):
        CalibrationTable.load_json(tmp_path / "bad.json")


def test_without_channel_stats_or_bad_alpha_is_a_clear_error(setup, tmp_path, capsys):
    m, _, table = setup
    with pytest.raises(InputError, match="per-channel activation maxima"):
        quantize_qdq(m, CalibrationTable(dict(table.amax)), QuantizeConfig(smoothquant_alpha=0.5))
    with pytest.raises(ConfigError, match="smoothquant_alpha"):
        QuantizeConfig(smoothquant_alpha=1.5)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    table.write_trt_cache(tmp_path / "t.cache")
    rc = main(["quantize", str(path), "--calib", str(tmp_path / "t.cache"), "--smoothquant", "0.8",
               "--out", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "per-channel activation maxima" in err and "Traceback" not in err
    assert not (tmp_path / "q.onnx").exists()
    table.save_json(tmp_path / "t.json")
    assert main(["quantize", str(path), "--calib", str(tmp_path / "t.json"), "--smoothquant", "0.8",
                 "--out", str(tmp_path / "q.onnx")]) == 0
    assert sum(n.op_type == "Mul" for n in onnx.load(str(tmp_path / "q.onnx")).graph.node) == 2


def test_smoothquant_with_fp16_rest_runs_and_stays_close(setup):
    m, _, table = setup
    xe = _data(64, 9)
    q = quantize_qdq(m, table, QuantizeConfig(smoothquant_alpha=0.8, fp16_rest=True)).model
    assert any(n.op_type == "Mul" for n in q.graph.node)
    for got, ref in zip(_run(q, xe), _run(m, xe)):
        assert float(((got - ref) ** 2).sum() / (ref**2).sum()) < 1e-3
