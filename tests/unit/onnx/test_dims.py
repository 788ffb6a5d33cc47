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
