"""Model preparation shared by calibrate and quantize.

Each test re-creates one fault on a small synthetic graph; expected values come from numpy or
ONNX's reference evaluator, never from trtopt itself.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.calib import CalibrationConfig, CalibrationTable, NumpySource, calibrate
from trtopt.cli.main import main
from trtopt.errors import InputError
from trtopt.onnx.graph import producers
from trtopt.onnx.walk import iter_graphs
from trtopt.prepare import prepare_model
from trtopt.quant import QuantizeConfig, quantize_qdq

RNG = np.random.default_rng(0)
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _f32(*shape, scale=0.5, rng=None):
    return ((rng or RNG).standard_normal(shape) * scale).astype(np.float32)


def _const(name, arr):
    return helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(arr, name))


def _ort(model, feeds):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _fake_quant(x, amax, axis=None):
    """Symmetric INT8 quantize-dequantize (round half to even, saturate), the QuantizeLinear definition."""
    x = np.asarray(x, np.float64)
    scale = (np.asarray(amax, np.float64) / 127.0).astype(np.float32).astype(np.float64)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def _conv_relu_conv(dtype=np.float32, opset=17):
    """x[N,3,6,6] -> Conv -> Relu -> Conv -> y (weights as initializers)."""
    n = helper.make_node
    t = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    g = helper.make_graph(
        [n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]), n("Relu", ["c0"], ["r0"], name="relu"),
         n("Conv", ["r0", "w1"], ["y"], name="conv1")], "g",
        [helper.make_tensor_value_info("x", t, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", t, ["N", 2, 6, 6])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3).astype(dtype), "w0"),
         numpy_helper.from_array(_f32(2, 4, 1, 1).astype(dtype), "w1")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


class _RecordingSource:
    """A calibration source that records whether calibration started reading it."""

    def __init__(self, x):
        self.x, self.read = x, False

    def __iter__(self):
        self.read = True
        yield {"x": self.x}


# ---- an INT8 model without a single Q/DQ node is an error ----------------------------------

def test_no_qdq_inserted_is_an_error_naming_why(tmp_path):
    m = _conv_relu_conv()
    with pytest.raises(InputError, match="no Q/DQ inserted.*calibration table is empty.*re-run `trtopt calibrate`"):
        quantize_qdq(m, CalibrationTable({}))
    with pytest.raises(InputError, match="no Q/DQ inserted.*2 excluded"):
        quantize_qdq(m, CalibrationTable({"x": 1.0, "r0": 1.0}), QuantizeConfig(exclude_op_types=("Conv",)))
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(m, str(path))
    CalibrationTable({}).save_json(tmp_path / "empty.json")
    assert main(["quantize", str(path), "--calib", str(tmp_path / "empty.json"), "--out", str(out)]) == 2
    assert not out.exists()


def test_cli_prints_int8_summary(tmp_path, capsys):
    m = _conv_relu_conv(opset=12)
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(m, str(path))
    CalibrationTable({"x": 1.0}).save_json(tmp_path / "t.json")  # r0 missing: conv1 stays float
    assert main(["quantize", str(path), "--calib", str(tmp_path / "t.json"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "opset 12 to 13" in err and "INT8: 1 layer(s) quantized, 2 Q/DQ pair(s)" in err
    assert "kept in float: conv1: no calibrated range for activation input 0 'r0'" in err


# ---- FP16 models are refused with the fix in the message ------------------------------------

def test_fp16_model_is_refused_before_calibration_and_quantization():
    m16 = _conv_relu_conv(np.float16)
    with pytest.raises(InputError, match="float16.*quantize the FP32 model and add --fp16-rest"):
        quantize_qdq(m16, CalibrationTable({"x": 1.0, "r0": 1.0}))
    src = _RecordingSource(_f32(2, 3, 6, 6).astype(np.float16))
    with pytest.raises(InputError, match="float16"):
        calibrate(m16, src)
    assert not src.read


# ---- already-quantized models are refused ---------------------------------------------------

def test_already_quantized_model_is_refused():
    m = _conv_relu_conv()
    table = CalibrationTable({"x": 1.0, "r0": 1.0})
    q = quantize_qdq(m, table).model
    with pytest.raises(InputError, match=r"already quantized \(\d+ DequantizeLinear, \d+ QuantizeLinear\)"):
        quantize_qdq(q, table)
    with pytest.raises(InputError, match="already quantized"):
        calibrate(q, _RecordingSource(_f32(2, 3, 6, 6)))


# ---- W @ x and weights reached through Constant/Transpose ----------------------------------

def test_matmul_with_constant_first_input_and_transposed_constant_weight_are_quantized():
    w_first = _f32(4, 5)          # y1 = W @ x, x [B, 5, 3]
    w_t = _f32(6, 3)              # y2 = y1 @ Transpose(W_t) with W_t a Constant node
    n = helper.make_node
    g = helper.make_graph(
        [_const("wt", w_t), n("Transpose", ["wt"], ["wt_T"], name="tr", perm=[1, 0]),
         n("MatMul", ["w_first", "x"], ["y1"], name="mm_wx"), n("MatMul", ["y1", "wt_T"], ["y"], name="mm_xw")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6])],
        [numpy_helper.from_array(w_first, "w_first")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = _f32(2, 5, 3, scale=1.0)
    ax, ay1 = float(np.abs(x).max()) * 0.8, 1.5  # clipping on purpose
    q = quantize_qdq(m, CalibrationTable({"x": ax, "y1": ay1})).model
    onnx.checker.check_model(q, full_check=True)
    prod = producers(q.graph)
    for node in (nd for nd in q.graph.node if nd.op_type == "MatMul"):
        assert [prod[i].op_type for i in node.input] == ["DequantizeLinear"] * 2, node.name
    wx = next(nd for nd in q.graph.node if nd.name == "mm_wx")
    assert not any(a.name == "axis" for a in prod[wx.input[0]].attribute)  # per-tensor: W is MatMul's input 0
    # expected: the same fake quantization in numpy (W per-tensor; W_t^T per output column, axis 1)
    y1 = _fake_quant(w_first, np.abs(w_first).max()) @ _fake_quant(x, ax)
    w_eff = w_t.T
    y = _fake_quant(y1, ay1) @ _fake_quant(w_eff, np.abs(w_eff).max(axis=0), axis=1)
    np.testing.assert_allclose(_ort(q, {"x": x})[0], y, rtol=1e-5, atol=1e-5)


def test_constant_node_weights_are_quantized_per_channel_like_initializers():
    """Paddle2ONNX stores every weight as a Constant node: same Q/DQ as initializers, file valid, ORT loads."""
    n = helper.make_node
    nodes = [_const("w0", _f32(8, 3, 3, 3)), _const("w1", _f32(4, 8, 1, 1)), _const("wg", _f32(5, 4)),
             n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]), n("Relu", ["c0"], ["r0"]),
             n("Conv", ["r0", "w1"], ["c1"], name="conv1"), n("GlobalAveragePool", ["c1"], ["p"]),
             n("Flatten", ["p"], ["f"]), n("Gemm", ["f", "wg"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = _f32(8, 3, 6, 6, scale=1.0)
    table = calibrate(m, NumpySource({"x": x}, batch_size=4), CalibrationConfig(method="minmax"))
    for storage in ("float", "int8"):
        q = quantize_qdq(m, table, QuantizeConfig(weight_storage=storage)).model
        onnx.checker.check_model(q, full_check=True)
        prod = producers(q.graph)
        for node in (nd for nd in q.graph.node if nd.op_type in WEIGHTED):
            assert [prod[i].op_type for i in node.input[:2]] == ["DequantizeLinear"] * 2, (storage, node.name)
            dq = prod[node.input[1]]
            assert helper.get_attribute_value(next(a for a in dq.attribute if a.name == "axis")) == 0
        if storage == "int8":
            assert not any(nd.op_type == "Constant" for nd in q.graph.node)  # float originals are gone
        y = _ort(q, {"x": x})[0]
        ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.05


# ---- opset 11/12 upgraded before calibrating, outputs unchanged --------------------------

def _opset11_model():
    """Conv -> Relu -> ReduceSum(axes attr) -> Unsqueeze/Squeeze(axes attr) -> Softmax -> Split(split attr)."""
    rng = np.random.default_rng(11)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]), n("Relu", ["c"], ["r"]),
             n("ReduceSum", ["r"], ["s"], axes=[2, 3], keepdims=0), n("Unsqueeze", ["s"], ["u"], axes=[2]),
             n("Squeeze", ["u"], ["sq"], axes=[2]), n("MatMul", ["sq", "wm"], ["mm"], name="mm"),
             n("Softmax", ["mm"], ["sm"], axis=1), n("Split", ["sm"], ["a", "b"], axis=1, split=[2, 3]),
             n("ReduceMax", ["b"], ["bm"], axes=[1], keepdims=1), n("Mul", ["a", "bm"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                          [numpy_helper.from_array(_f32(4, 3, 3, 3, rng=rng), "w"),
                           numpy_helper.from_array(_f32(4, 5, scale=0.05, rng=rng), "wm")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])


def test_opset11_model_is_upgraded_before_calibration_with_identical_outputs(caplog):
    m = _opset11_model()
    x = _f32(8, 3, 6, 6, scale=1.0, rng=np.random.default_rng(1))
    prepared, notes = prepare_model(m)
    assert next(o.version for o in prepared.opset_import if o.domain == "") == 13
    assert any("opset 11 to 13" in s for s in notes)
    assert np.array_equal(_ort(prepared, {"x": x})[0], _ort(m, {"x": x})[0])
    table = calibrate(m, NumpySource({"x": x}, batch_size=4), CalibrationConfig(method="minmax"))
    assert table.model_hash == hashlib.sha256(prepared.SerializeToString()).hexdigest()  # same graph for both
    with caplog.at_level("WARNING", logger="trtopt"):
        q = quantize_qdq(m, table).model
    assert "different model" not in caplog.text
    onnx.checker.check_model(q, full_check=True)
    assert sum(nd.op_type == "QuantizeLinear" for nd in q.graph.node) == 4
    ref = _ort(m, {"x": x})[0]
    assert np.linalg.norm(_ort(q, {"x": x})[0] - ref) / np.linalg.norm(ref) < 0.1


def test_opset_that_cannot_be_upgraded_is_refused_before_calibrating(monkeypatch):
    from onnx import version_converter

    def fail(model, target):
        raise RuntimeError("No Adapter For Split")

    monkeypatch.setattr(version_converter, "convert_version", fail)
    src = _RecordingSource(_f32(2, 3, 6, 6))
    with pytest.raises(InputError, match="opset 11.*could not convert it.*re-export the model with opset >= 13"):
        calibrate(_opset11_model(), src)
    assert not src.read


# ---- BatchNormalization folded after Conv and ConvTranspose (grouped, behind a bias Add) ----

def _bn(name, x, y, c):
    inits = [numpy_helper.from_array(a.astype(np.float32), f"{name}_{k}") for k, a in
             (("g", RNG.uniform(0.5, 2, c)), ("b", RNG.standard_normal(c)), ("m", RNG.standard_normal(c)),
              ("v", RNG.uniform(0.1, 1e3, c)))]
    node = helper.make_node("BatchNormalization", [x] + [t.name for t in inits], [y], name=name, epsilon=1e-3)
    return node, inits


def test_batchnorm_after_conv_and_grouped_conv_transpose_is_folded_exactly():
    n = helper.make_node
    bn0, i0 = _bn("bn0", "c0", "bn0_out", 6)
    bn1, i1 = _bn("bn1", "ct_b", "y", 6)
    nodes = [_const("w0", _f32(6, 4, 3, 3)), n("Conv", ["x", "w0", "cb0"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
             bn0, n("Relu", ["bn0_out"], ["r"]),
             # ConvTranspose weight [C_in=6, C_out/group=2, 2, 2], group 3 -> 6 output channels; bias as an Add
             n("ConvTranspose", ["r", "wt"], ["ct"], name="convT", strides=[2, 2], group=3),
             n("Add", ["ct", "ctb"], ["ct_b"]), bn1]
    inits = [numpy_helper.from_array(_f32(6), "cb0"), numpy_helper.from_array(_f32(6, 2, 2, 2), "wt"),
             numpy_helper.from_array(_f32(1, 6, 1, 1), "ctb"), *i0, *i1]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 10, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    prepared, notes = prepare_model(m)
    onnx.checker.check_model(prepared, full_check=True)
    ops = [nd.op_type for nd in prepared.graph.node]
    assert "BatchNormalization" not in ops and "Add" not in ops, ops
    assert any("folded 2 BatchNormalization" in s for s in notes)
    outs = {o for nd in prepared.graph.node for o in nd.output}
    assert {"bn0_out", "y"} <= outs  # the BN output names survive (calibration tables stay valid)
    x = _f32(3, 4, 5, 5, scale=1.0)
    # oracle: ONNX Runtime without graph optimizations (runs BN as its own kernel; onnx.reference's
    # ConvTranspose does not support group > 1)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(_ort(prepared, {"x": x})[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ---- compute inside If/Loop/Scan ------------------------------------------------------------

def _if_model():
    n = helper.make_node
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 2, 4, 4])  # noqa: E731
    then_g = helper.make_graph([n("Conv", ["x", "w0"], ["t"], name="conv_then")], "then", [], [out("t")])
    else_g = helper.make_graph([n("Conv", ["x", "w1"], ["e0"], name="conv_else0"), n("Relu", ["e0"], ["e1"]),
                                n("Conv", ["e1", "w2"], ["e"], name="conv_else1")], "else", [], [out("e")])
    g = helper.make_graph([n("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)], "g",
                          [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])], [out("y")],
                          [numpy_helper.from_array(_f32(2, 3, 1, 1), "w0"), numpy_helper.from_array(_f32(2, 3, 1, 1),
                                                                                                     "w1"),
                           numpy_helper.from_array(_f32(2, 2, 1, 1), "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_iter_graphs_walks_nested_subgraphs_with_paths():
    m = _if_model()
    paths = [p for p, _ in iter_graphs(m.graph)]
    assert sorted(paths) == ["", "branch.else_branch", "branch.then_branch"]
    loop_body = helper.make_graph([helper.make_node("If", ["c"], ["o"], name="inner",
                                                    then_branch=m.graph.node[0].attribute[0].g,
                                                    else_branch=m.graph.node[0].attribute[1].g)], "body", [], [])
    outer = helper.make_graph([helper.make_node("Loop", ["n", "c"], ["z"], name="loop", body=loop_body)], "o", [], [])
    assert sorted(p for p, _ in iter_graphs(outer)) == ["", "loop.body", "loop.body/inner.else_branch",
                                                        "loop.body/inner.then_branch"]


def test_control_flow_model_says_what_is_inside(tmp_path, capsys):
    import json

    m = _if_model()
    feeds = {"cond": np.array(True), "x": _f32(2, 3, 4, 4)}
    with pytest.raises(InputError, match="inside control-flow subgraphs") as err:
        calibrate(m, [feeds])
    assert "1 Conv in 'branch.then_branch'" in str(err.value) and "2 Conv in 'branch.else_branch'" in str(err.value)
    with pytest.raises(InputError, match="branch.else_branch"):
        quantize_qdq(m, CalibrationTable({"x": 1.0}))
    path = tmp_path / "if.onnx"
    onnx.save(m, str(path))
    assert main(["inspect", "sparsity", str(path), "--json", "--gpu", "a100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["control_flow"] == {"branch.then_branch": {"Conv": 1}, "branch.else_branch": {"Conv": 2}}
    assert report["preflight"]["verdict"] == "control_flow"
    assert "prune" not in report["preflight"]["message"] and "branch.else_branch" in report["preflight"]["message"]


def test_prepare_is_a_no_op_on_a_prepared_model_and_leaves_non_channel_adds_alone():
    n = helper.make_node
    bn, inits = _bn("bn", "a", "y", 4)
    # the Add's constant varies along W, not along channels: it must not be folded into the bias (nor the BN)
    g = helper.make_graph([n("Conv", ["x", "w"], ["c"], name="conv"), n("Add", ["c", "row"], ["a"]), bn], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 5])],
                          [numpy_helper.from_array(_f32(4, 3, 1, 1), "w"),
                           numpy_helper.from_array(_f32(1, 1, 1, 5), "row"), *inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    prepared, notes = prepare_model(m)
    assert prepared is m and notes == []  # nothing to do: same object, same bytes, same hash
    assert [nd.op_type for nd in prepared.graph.node] == ["Conv", "Add", "BatchNormalization"]
    again, _ = prepare_model(_conv_relu_conv(opset=12))
    assert prepare_model(again)[0] is again
