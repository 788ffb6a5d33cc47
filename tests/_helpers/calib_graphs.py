"""Small float graphs for calibration tests, checked with ONNX's full checker, and their configs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtopt.calib import CalibrationConfig

ORT = CalibrationConfig(collector="onnxruntime")


def float_model(nodes, inputs, inits=(), outputs=(("y", ["N", None]),)):
    g = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                               for n, s in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def weight(shape, name="w", seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def ort_config(method, **kw):
    return CalibrationConfig(method=method, collector="onnxruntime", **kw)


def matmul_model(k=16):
    return float_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])], [weight((k, 4))])


def state_model(state_dims):
    """y = MatMul(x + ReduceSum(state over its leading axes), w): state is not a sample on axis 0."""
    nodes = [helper.make_node("ReduceMean", ["state"], ["s"], axes=list(range(len(state_dims) - 1)), keepdims=0),
             helper.make_node("Add", ["x", "s"], ["h"]), helper.make_node("Mul", ["h", "sr"], ["hs"]),
             helper.make_node("MatMul", ["hs", "w"], ["y"])]
    return float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
                               helper.make_tensor_value_info("state", TensorProto.FLOAT, state_dims),
                               helper.make_tensor_value_info("sr", TensorProto.FLOAT, [])], [weight((16, 4))])


def silu_model():
    """x[N,64] -> SiLU (Sigmoid * x) -> MatMul -> y: the activation 'act' is SiLU's output."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["sg"]), helper.make_node("Mul", ["x", "sg"], ["act"]),
             helper.make_node("MatMul", ["act", "w"], ["y"])]
    return float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])], [weight((64, 8))])


def silu_data(n=512):
    """Pre-activations where SiLU's negative dip dominates and a few positives have a long tail, [n, 64]."""
    r = np.random.default_rng(0)
    x = r.normal(-1.5, 1.0, (n, 64))  # most pre-activations sit around SiLU's minimum (-0.2785)
    pos = r.random((n, 64)) < 0.05
    x[pos] = r.exponential(0.3, pos.sum())  # a minority of positive activations with a long tail
    return x.astype(np.float32)
