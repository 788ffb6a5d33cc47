"""The ONNX Runtime runner: computes, validates its inputs, and refuses corrupt or missing models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtopt.backends import open_runner
from trtopt.backends.onnxrt import OnnxRuntimeRunner
from trtopt.errors import ConfigError, InputError


@pytest.fixture
def matmul_onnx(tmp_path):
    """y = x @ W with x: [batch, 4], W: [4, 3]."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [onnx.numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "mm.onnx"
    onnx.save(model, str(path))
    return path, w


def test_onnxruntime_runner_computes_and_validates(matmul_onnx):
    path, w = matmul_onnx
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with open_runner("onnxruntime", path) as r:
        assert isinstance(r, OnnxRuntimeRunner)
        np.testing.assert_allclose(r.infer({"x": x})["y"], x @ w, rtol=1e-5)
        fn = r.prepare({"x": x})
        np.testing.assert_allclose(fn()[0], x @ w, rtol=1e-5)
        with pytest.raises(InputError, match="shape"):
            r.infer({"x": x[:, :3]})
        with pytest.raises(InputError, match="dtype"):
            r.infer({"x": x.astype(np.float64)})
        with pytest.raises(InputError, match="missing"):
            r.infer({"z": x})


def test_corrupt_and_missing_models_are_input_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputError, match="cannot load"), OnnxRuntimeRunner(bad):
        pass
    with pytest.raises(InputError, match="not found"), OnnxRuntimeRunner(tmp_path / "nope.onnx"):
        pass
    with pytest.raises(ConfigError, match="unknown backend"):
        open_runner("tflite", bad)
