"""Placeholder dims: Paddle2ONNX's ``"?"`` dims get unique names, and the model still runs."""

from __future__ import annotations

import numpy as np
import onnx

from _helpers.dim_graphs import qmark_model
from trtopt.onnx.dims import placeholder_dims, with_unique_placeholder_dims


def test_placeholder_dims_get_unique_names_and_the_model_still_runs(tmp_path):
    path = qmark_model(tmp_path / "q.onnx")
    model = onnx.load(str(path))
    assert placeholder_dims(model) == [("x", 2, "?"), ("x", 3, "?")]
    fixed, renamed = with_unique_placeholder_dims(model)
    names = [d.dim_param for d in fixed.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert renamed == {"x[2]": names[0], "x[3]": names[1]} and len(set(names)) == 2 and "?" not in names
    assert placeholder_dims(fixed) == [] and placeholder_dims(model)  # a copy: the input is not changed
    assert with_unique_placeholder_dims(fixed) == (fixed, {})  # nothing to do: the same object
    onnx.checker.check_model(fixed, full_check=True)
    import onnxruntime as ort

    x = np.random.default_rng(0).random((2, 3, 4, 6), dtype=np.float32)
    got = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x.mean(axis=(2, 3)), rtol=1e-5)


def test_graph_inputs_is_the_one_reading_of_a_models_inputs_every_stage_agrees_on():
    from onnx import TensorProto, helper, numpy_helper

    from trtopt.backends.tensorrt.graph import graph_info
    from trtopt.calib.source import model_input_specs
    from trtopt.inputs import specs_from_onnx
    from trtopt.onnx.dims import graph_inputs

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    x.type.tensor_type.shape.dim[0].dim_value = -1  # Paddle-style -1 next to a name
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 0])  # 0 = any size too
    listed_weight = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4])  # old exporters list weights
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x, ids, listed_weight],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = helper.make_model(g)
    got = [(i.name, i.dims, i.dtype_name) for i in graph_inputs(m)]
    assert got == [("x", (None, 4), "float32"), ("ids", (None, None), "int64")]
    info = graph_info(m.SerializeToString())
    assert info.inputs == {"x": (-1, 4), "ids": (-1, -1)} and info.dtypes == {"x": "float32", "ids": "int64"}
    assert {k: v[0] for k, v in model_input_specs(m).items()} == {"x": (None, 4), "ids": (None, None)}
    assert [s.name for s in specs_from_onnx(m)] == ["x", "ids"]
