"""A tiny CNN and a token model on disk, with good and wrong-shape .npz files, and fast bench flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

FAST_ARGS = ["--batch", "1", "--min-duration", "0.02", "--rounds", "5", "--warmup", "1", "--no-plots"]


def cnn_model(path: Path, sign: float = 1.0, batch: str | int = "N") -> Path:
    """img [N, 1, 8, 8] -> Conv 3x3 -> Relu -> Flatten -> MatMul -> logits [N, 5]; ``sign`` scales the head."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "B")
    g = numpy_helper.from_array(sign * 0.1 * rng.standard_normal((256, 5)).astype(np.float32), "G")
    nodes = [helper.make_node("Conv", ["img", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "G"], ["logits"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [batch, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])], [w, b, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def token_model(path: Path) -> Path:
    """ids int64 [batch, seq] (seq dynamic) -> Gather on a [50, 8] table -> MatMul [8, 4] -> ReduceMean(seq)."""
    rng = np.random.default_rng(1)
    emb = numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "E")
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["h"]),
             helper.make_node("ReduceMean", ["h"], ["out"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "tok", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])], [emb, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cnn_wrongshape.npz", img=rng.random((341, 1, 6, 8)).astype(np.float32))
    np.savez(tmp_path / "good.npz", img=rng.random((40, 1, 8, 8)).astype(np.float32),
             labels=rng.integers(0, 5, 40))
    return {"cnn": cnn_model(tmp_path / "cnn.onnx"), "wrong": tmp_path / "cnn_wrongshape.npz",
            "good": tmp_path / "good.npz", "dir": tmp_path}
