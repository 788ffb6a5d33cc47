"""Small graphs whose output tails are those of real task heads (for output-kind recognition and judging)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _model(nodes, inits, x_shape, out_shape=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, x_shape)],
                          [helper.make_tensor_value_info("y", F, out_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def yolo_head(classes: int = 3, axis: int = 1) -> onnx.ModelProto:
    """x [N, 8, A] -> Concat(box MatMul [N, 4, A], Sigmoid scores [N, C, A]) on ``axis`` (1: [N, 4+C, A])."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("MatMul", ["wb", "x"], ["b"]), n("MatMul", ["ws", "x"], ["s"]), n("Sigmoid", ["s"], ["sg"]),
             n("Concat", ["b", "sg"], ["cat"], axis=1)]
    if axis == 1:
        nodes.append(n("Identity", ["cat"], ["y"]))
    else:
        nodes.append(n("Transpose", ["cat"], ["y"], perm=[0, 2, 1]))
    return _model(nodes, {"wb": rng.uniform(0, 40, (4, 8)).astype(np.float32),
                          "ws": rng.normal(size=(classes, 8)).astype(np.float32)}, ["N", 8, "A"],
                  ["N", 4 + classes, "A"] if axis == 1 else ["N", "A", 4 + classes])


def tail(op: str, **attrs) -> onnx.ModelProto:
    """x -> MatMul(w [8, 8]) -> ``op`` -> y, any rank (the op is the output's tail)."""
    w = np.eye(8, dtype=np.float32)
    n = helper.make_node
    return _model([n("MatMul", ["x", "w"], ["h"]), n(op, ["h"], ["y"], **attrs)], {"w": w}, None)


def l2_normalized() -> onnx.ModelProto:
    """x [N, 8] -> MatMul -> divided by its L2 norm (an embedding; NaN for an all-zero sample)."""
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["h"]), n("ReduceL2", ["h"], ["nrm"], axes=[1], keepdims=1),
             n("Div", ["h", "nrm"], ["y"])]
    return _model(nodes, {"w": np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)}, ["N", 8], ["N", 8])


def wide_classifier(path, samples: int = 64, seed: int = 0):
    """x [N, 256] -> MatMul -> Sigmoid -> MatMul -> Softmax -> y [N, 10], saved to ``path``; returns ``(path, x)``.

    The Sigmoid bounds the hidden range, so an input outlier stretches no range but the input's."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["h"], name="/fc1/MatMul"), n("Sigmoid", ["h"], ["r"]),
             n("MatMul", ["r", "w2"], ["z"], name="/fc2/MatMul"), n("Softmax", ["z"], ["y"], axis=-1)]
    m = _model(nodes, {"w1": (rng.normal(size=(256, 32)) / 16).astype(np.float32),
                       "w2": rng.normal(size=(32, 10)).astype(np.float32)}, ["N", 256], ["N", 10])
    onnx.save(m, path)
    return str(path), rng.normal(size=(samples, 256)).astype(np.float32)
