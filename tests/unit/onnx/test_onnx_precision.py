"""One answer to "is this model quantized / does it hold Q/DQ / does it compute in FP16"."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.onnx.precision import computes_fp16, has_qdq, is_quantized, quantization_ops

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _model(nodes, inits=(), elem=F32, opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, [1, 4])],
                          [helper.make_tensor_value_info("y", elem, [1, 4])], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _scale():
    return [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]


def _qdq():
    return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                   helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], _scale())


def _qlinear():
    return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                   helper.make_node("QLinearMatMul", ["q", "s", "z", "q", "s", "z", "s", "z"], ["qy"]),
                   helper.make_node("DequantizeLinear", ["qy", "s", "z"], ["y"])], _scale())


def _integer_only():
    return _model([helper.make_node("MatMulInteger", ["x", "x"], ["y"])])


def _fp16():
    return _model([helper.make_node("Relu", ["x"], ["y"])], elem=F16)


def _fp32():
    return _model([helper.make_node("Relu", ["x"], ["y"])])


@pytest.mark.parametrize(("build", "quantized", "qdq", "fp16"), [
    (_qdq, True, True, False),
    (_qlinear, True, True, False),
    (_integer_only, True, False, False),
    (_fp16, False, False, True),
    (_fp32, False, False, False),
], ids=["qdq", "qlinear", "integer-only", "fp16", "fp32"])
def test_precision_questions(build, quantized, qdq, fp16):
    m = build()
    assert is_quantized(m) is quantized
    assert has_qdq(m) is qdq
    assert computes_fp16(m) is fp16


def test_quantization_ops_counts_every_graph_sorted_by_op():
    m = _qlinear()
    body = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["b_out"])], "then", [],
                             [helper.make_tensor_value_info("b_out", F32, [1, 4])])
    m.graph.node.append(helper.make_node("If", ["c"], ["unused"], then_branch=body, else_branch=body))
    assert quantization_ops(m) == {"DequantizeLinear": 3, "QLinearMatMul": 1, "QuantizeLinear": 1}
    assert quantization_ops(_fp32()) == {}


def test_qdq_only_inside_a_subgraph_counts():
    m = _fp32()
    body = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["b_out"])], "then", [],
                             [helper.make_tensor_value_info("b_out", F32, [1, 4])])
    m.graph.node.append(helper.make_node("If", ["c"], ["unused"], then_branch=body, else_branch=body))
    assert is_quantized(m) and has_qdq(m)


def test_fp16_weights_held_by_constant_nodes_count():
    w = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones((4, 4), np.float16)))
    m = _model([w, helper.make_node("Cast", ["x"], ["x16"], to=F32),
                helper.make_node("MatMul", ["x16", "w"], ["y"])])
    assert computes_fp16(m)
