"""Reading an ONNX model for a build: placeholder dims renamed for the parser, GraphInfo, read_model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.tensorrt.graph import graph_info, hide_renamed_dims, prepare_for_parser, read_model
from trtopt.errors import InputError


def _model(x_dims=("?", 3, "?", "?"), extra_input=False, qdq=False):
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims))]
    inits = []
    if extra_input:
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, [1]))
    if qdq:
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
                 helper.make_node("ReduceMean", ["dq"], ["y"], axes=[2, 3], keepdims=0)]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_dims[0], 3])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_placeholder_dims_become_unique_for_the_parser_only():
    data = _model().SerializeToString()
    parsed, renamed = prepare_for_parser(data, "m.onnx")
    assert set(renamed) == {"x[0]", "x[2]", "x[3]", "y[0]"} and parsed != data
    dims = [d.dim_param for d in onnx.load_from_string(parsed).graph.input[0].type.tensor_type.shape.dim]
    assert len({dims[0], dims[2], dims[3]}) == 3 and "?" not in dims


def test_a_model_with_real_dim_names_goes_to_the_parser_unchanged():
    data = _model(("batch", 3, 8, 8)).SerializeToString()
    assert prepare_for_parser(data, "m.onnx") == (data, {})


def test_graph_info_reads_inputs_dtypes_and_qdq():
    info = graph_info(_model(("batch", 3, 8, 8), extra_input=True, qdq=True).SerializeToString())
    assert info.inputs == {"x": (-1, 3, 8, 8), "flag": (1,)}
    assert info.dim_names["x"] == ("batch", None, None, None)
    assert info.dtypes == {"x": "float32", "flag": "bool"}
    assert info.has_qdq and not info.has_fp16


def test_renamed_axes_show_as_unnamed():
    parsed, renamed = prepare_for_parser(_model().SerializeToString(), "m.onnx")
    assert hide_renamed_dims(graph_info(parsed), renamed).dim_names["x"] == (None, None, None, None)


def test_read_model_keeps_the_file_bytes_for_the_key_and_gives_the_parser_its_own(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    model = read_model(path)
    assert model.file_bytes == path.read_bytes() and model.parser_bytes != model.file_bytes
    assert model.path == path and set(model.renamed) == {"x[0]", "x[2]", "x[3]", "y[0]"}
    assert model.info.dim_names["x"] == (None, None, None, None)


def test_read_model_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_model(tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        graph_info(b"\xff\x00 not onnx" * 4)
