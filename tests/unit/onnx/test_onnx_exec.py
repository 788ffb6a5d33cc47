"""Running a graph in ONNX Runtime: exposed intermediates and the batched predict."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.onnx.exec import exposed_bytes, exposed_outputs, make_session, predict, run_session

pytest.importorskip("onnxruntime")
F32 = TensorProto.FLOAT


def _mlp(batch: int | str = "N") -> onnx.ModelProto:
    """x [batch, 4] -> MatMul(w) -> h -> Relu -> y."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 8 - 1, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", F32, [batch, 4])],
                          [helper.make_tensor_value_info("y", F32, [batch, 4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_exposed_outputs_skip_existing_outputs_and_type_only_what_is_known():
    extra = exposed_outputs(_mlp(), ["h", "y", "h", "x"], {"h": F32})
    assert [o.name for o in extra.graph.output] == ["h", "x"]
    assert extra.graph.output[0].type.tensor_type.elem_type == F32
    assert not extra.graph.output[1].HasField("type")


def test_an_exposed_intermediate_is_returned_by_the_session():
    m = _mlp()
    sess = make_session(exposed_bytes(m, ["h"]), optimize=False)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    h, y = run_session(sess, ["h", "y"], {"x": x})
    np.testing.assert_allclose(h, x @ numpy_helper.to_array(m.graph.initializer[0]), rtol=1e-6)
    np.testing.assert_allclose(y, np.maximum(h, 0))
    assert len(m.graph.output) == 1  # the model itself is not changed


@pytest.mark.parametrize("batch", ["N", 2], ids=["dynamic", "fixed-2"])
def test_predict_gives_the_same_outputs_whatever_the_call_size(batch):
    m = _mlp(batch)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    whole = predict(_mlp(), {"x": x}, 0)["y"]
    cut = predict(m, {"x": x}, 3)
    assert list(cut) == ["y"]
    np.testing.assert_allclose(cut["y"], whole, rtol=1e-6)
