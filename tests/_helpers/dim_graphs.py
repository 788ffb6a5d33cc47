"""Graphs with unknown dims: Paddle2ONNX-style ``"?"`` dims, and two token inputs sharing dim names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from trtopt.onnx.io import save_onnx


def qmark_model(path: Path) -> Path:
    """Paddle-style input ``x [-1, 3, "?", "?"]`` (H and W unknown, both named "?") -> mean over H, W."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3])
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "qmark", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    return save_onnx(m, path)


def two_input_model(path: Path, mask_dims=("batch", "seq")) -> Path:
    """``input_ids [batch, seq]`` and ``attention_mask`` (dims ``mask_dims``) -> masked mean embedding [batch, 4]."""
    table = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
             helper.make_node("Mul", ["emb", "m3"], ["e"]),
             helper.make_node("ReduceSum", ["e", "ax1"], ["y"], keepdims=0)]
    g = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                       helper.make_tensor_value_info("attention_mask", TensorProto.INT64, list(mask_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], np.int64), "ax"),
         numpy_helper.from_array(np.array([1], np.int64), "ax1")])
    return save_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
