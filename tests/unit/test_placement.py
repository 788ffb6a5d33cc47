"""TensorRT's Q/DQ placement rules, shared by calibration and Q/DQ insertion."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import trtopt
from trtopt.placement import calibration_targets, compute_nodes, residual_skip_inputs, weight_axis

F32 = TensorProto.FLOAT


def _residual_block() -> onnx.ModelProto:
    """x -> Conv(c1) -> Relu -> Conv(c2) -> Add(skip = x) -> y: the skip input x is quantized, not c2's output."""
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="c1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w"], ["b"], name="c2"),
             helper.make_node("Add", ["b", "x"], ["y"], name="add")]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", F32, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", F32, [1, 4, 8, 8])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_only_the_skip_input_of_a_residual_add_is_calibrated_and_quantized():
    m = _residual_block()
    assert residual_skip_inputs(m.graph, {"c1", "c2"}) == {"add": 1}
    assert calibration_targets(m) == ["x", "r"]


def test_weight_axis_is_the_output_channel_axis():
    w4, w2 = np.zeros((8, 4, 3, 3)), np.zeros((4, 8))
    assert weight_axis(helper.make_node("Conv", ["x", "w"], ["y"]), w4) == 0
    assert weight_axis(helper.make_node("ConvTranspose", ["x", "w"], ["y"]), w4) == 1
    assert weight_axis(helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), w2) == 0
    assert weight_axis(helper.make_node("Gemm", ["x", "w"], ["y"]), w2) == 1
    assert weight_axis(helper.make_node("MatMul", ["x", "w"], ["y"]), w2) == 1
    assert weight_axis(helper.make_node("MatMul", ["x", "w"], ["y"]), np.zeros((2, 4, 8))) is None


def test_a_compute_node_is_int8_when_both_inputs_come_from_dequantize_through_layout_ops():
    s = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
         numpy_helper.from_array(np.ones((4, 4), np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
             helper.make_node("Transpose", ["wd"], ["wt"]),
             helper.make_node("MatMul", ["xd", "wt"], ["h"], name="int8"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="float")]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", F32, [1, 4])],
                          [helper.make_tensor_value_info("y", F32, [1, 4])], s)
    assert [(n.name, q) for n, q in compute_nodes(g)] == [("int8", True), ("float", False)]


def test_calibration_never_imports_quantization():
    root = Path(trtopt.__file__).parent
    files = [*(root / "calib").glob("*.py"), *(root / "onnx").glob("*.py"), root / "placement.py", root / "prepare.py"]
    for p in files:
        assert not re.search(r"^\s*(from|import) trtopt\.quant\b", p.read_text(), re.M), p
