"""MACs of Conv/ConvTranspose/Gemm/MatMul at given shapes, and the share computed in INT8 Q/DQ."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.onnx.macs import format_macs, mac_share

F32 = TensorProto.FLOAT


def _w(name, shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def _qw(name, shape):
    """INT8 weight ``name`` behind a DequantizeLinear (output ``name``)."""
    q = numpy_helper.from_array(np.ones(shape, np.int8), f"{name}_q")
    return [q], [helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [name])]


def _model(nodes, inits, x_shape, y_shape, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, x_shape)],
                          [helper.make_tensor_value_info("y", F32, y_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _scale():
    return [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z")]


def test_grouped_and_depthwise_conv_count_cin_over_groups_at_the_given_batch():
    # x [N,8,10,10] -> depthwise 3x3 (groups 8, pad 1) -> grouped 1x1 (8 -> 16, groups 2)
    nodes = [helper.make_node("Conv", ["x", "wd"], ["a"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "wg"], ["y"], group=2)]
    m = _model(nodes, [_w("wd", (8, 1, 3, 3)), _w("wg", (16, 4, 1, 1))], ["batch", 8, 10, 10], ["batch", 16, 10, 10])
    r = mac_share(m, {"x": (4, 8, 10, 10)})
    n = 4
    assert [x.macs for x in r.nodes] == [n * 8 * 10 * 10 * (8 // 8) * 9, n * 16 * 10 * 10 * (8 // 2) * 1]
    assert r.total_macs == sum(x.macs for x in r.nodes) and r.unshaped == ()


def test_conv_transpose_and_gemm_with_trans_b():
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["a"], strides=[2, 2], group=2),
             helper.make_node("Flatten", ["a"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    # x [1,4,5,5] -> ConvTranspose 4 -> 6 (groups 2, kernel 2, stride 2) -> [1,6,10,10] -> Gemm to 7
    m = _model(nodes, [_w("wt", (4, 3, 2, 2)), _w("wf", (7, 600))], [1, 4, 5, 5], [1, 7])
    r = mac_share(m, {"x": (1, 4, 5, 5)})
    assert r.by_op["ConvTranspose"][0] == 1 * 4 * 5 * 5 * 3 * 2 * 2
    assert r.by_op["Gemm"][0] == 1 * 600 * 7


def test_int8_needs_both_data_inputs_from_int8_dequantize():
    # Conv: activation and weight from INT8 DQ -> INT8; MatMul of two activations, one DQ'd -> float.
    qi, qn = _qw("w", (4, 4, 1, 1))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]), *qn,
             helper.make_node("Conv", ["xd", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shp"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["rd", "rt"], ["y"])]
    shp = numpy_helper.from_array(np.array([0, 4, -1], np.int64), "shp")
    m = _model(nodes, [*qi, *_scale(), shp], ["n", 4, 6, 6], ["n", 4, 4])
    r = mac_share(m, {"x": (2, 4, 6, 6)})
    conv, mm = r.nodes
    assert conv.int8 and not mm.int8
    assert r.int8_macs == conv.macs == 2 * 4 * 36 * 4
    assert mm.macs == 2 * 4 * 4 * 36
    assert r.share == pytest.approx(conv.macs / (conv.macs + mm.macs))
    assert [n.name for n in r.top_float()] == [mm.name]
    assert "INT8 MACs:" in r.line() and r.to_json()["by_op"]["MatMul"]["int8_macs"] == 0


def test_int8_looks_through_layout_ops_and_not_through_float_ops():
    qi, qn = _qw("w", (6, 4))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]), *qn,
             helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["xd", "wt"], ["m1"]),  # INT8: the Transpose is layout only
             helper.make_node("Relu", ["xd"], ["xr"]),
             helper.make_node("MatMul", ["xr", "wt"], ["m2"]),  # float: the Relu computes in float
             helper.make_node("Add", ["m1", "m2"], ["y"])]
    m = _model(nodes, [*qi, *_scale()], [3, 4], [3, 6])
    r = mac_share(m, {"x": (3, 4)})
    assert [n.int8 for n in r.nodes] == [True, False]


def test_nodes_inside_if_branches_are_counted():
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", F32, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", F32, None)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    c = numpy_helper.from_array(np.array(True), "c")
    m = _model(nodes, [_w("w", (5, 5)), c], ["b", 5], ["b", 5])
    r = mac_share(m, {"x": (7, 5)})
    assert [(n.op_type, n.graph, n.macs) for n in r.nodes] == [("MatMul", r.nodes[0].graph, 7 * 5 * 5)]
    assert r.nodes[0].graph.endswith("then_branch")


def test_format_macs_units():
    assert format_macs(1_234_567) == "1.23 MMAC" and format_macs(999) == "999 MAC"


def _ppocr_rec() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    return p if p.exists() else None


@pytest.mark.skipif(_ppocr_rec() is None, reason="rapidocr-onnxruntime (PP-OCRv4 rec) not installed")
def test_ppocr_rec_attention_matmuls_get_shapes_through_paddle_shape_chains():
    m = onnx.load(_ppocr_rec())
    name = m.graph.input[0].name
    narrow, wide = mac_share(m, {name: (1, 3, 48, 160)}), mac_share(m, {name: (1, 3, 48, 320)})
    assert wide.unshaped == () and wide.by_op["MatMul"][0] > 0
    # the SVTR neck works on a width/8 sequence: projections grow linearly, attention quadratically
    assert 2 * narrow.by_op["MatMul"][0] < wide.by_op["MatMul"][0] < 4 * narrow.by_op["MatMul"][0]
    assert wide.by_op["Conv"][0] == pytest.approx(2 * narrow.by_op["Conv"][0], rel=0.01)


@pytest.mark.skipif(_ppocr_rec() is None, reason="rapidocr-onnxruntime (PP-OCRv4 rec) not installed")
def test_ppocr_rec_with_qdq_is_sized_through_every_attention_block():
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    from trtopt.quant import QuantizeConfig, quantize_qdq

    src = _ppocr_rec()
    x = np.random.default_rng(0).random((2, 3, 48, 320), dtype=np.float32)
    table = calibrate(str(src), NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    q = quantize_qdq(str(src), table, QuantizeConfig(fidelity_guard=False)).model
    shapes = {"x": (1, 3, 48, 320)}
    qdq, fp32 = mac_share(q, shapes), mac_share(onnx.load(src), shapes)
    assert qdq.unshaped == () and qdq.total_macs == fp32.total_macs  # Q/DQ changes no MAC
    assert qdq.share == 1.0 and fp32.share == 0.0
