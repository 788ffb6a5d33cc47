"""A real multi-GB ONNX model stored as external data, written without holding it in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

F32 = TensorProto.FLOAT


def write_external_data_model(path: Path, dim: int, value: float) -> Path:
    """``y = (x @ w1) @ w2`` with two ``[dim, dim]`` float32 weights filled with ``value``, stored as external data.

    The weights are written straight to ``<path>.data`` (one block in memory at a time) and the model
    only points at them, so making a 2 GB model (``dim=16384``) costs seconds and one weight's memory.
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
