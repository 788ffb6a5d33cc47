"""FP16 conversion: graph I/O stays FP32, blocked ops / LayerNorm pattern / data rule stay FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.calib import NumpySource
from trtopt.errors import ConfigError
from trtopt.quant import FP16Config, convert_fp16, layernorm_pattern_nodes

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT


def _model():
    """x[N,8] -> MatMul -> decomposed LayerNorm -> MatMul -> Mul(big) -> Softmax -> y."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 16)) * 0.5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((16, 4)) * 0.5).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        numpy_helper.from_array(np.ones(16, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(16, np.float32), "beta"),
        numpy_helper.from_array(np.array([1e5, 1, 1, 1], np.float32), "huge"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "small"),
    ]
    nodes = [
        n("MatMul", ["x", "w1"], ["h"], name="/fc1/MatMul"),
        n("ReduceMean", ["h"], ["mu"], name="/ln/ReduceMean", axes=[-1]),
        n("Sub", ["h", "mu"], ["d"], name="/ln/Sub"),
        n("Pow", ["d", "two"], ["d2"], name="/ln/Pow"),
        n("ReduceMean", ["d2"], ["var"], name="/ln/ReduceMean_1", axes=[-1]),
        n("Add", ["var", "eps"], ["ve"], name="/ln/Add"),
        n("Sqrt", ["ve"], ["sd"], name="/ln/Sqrt"),
        n("Div", ["d", "sd"], ["nrm"], name="/ln/Div"),
        n("Mul", ["nrm", "gamma"], ["sc"], name="/ln/Mul"),
        n("Add", ["sc", "beta"], ["ln"], name="/ln/Add_1"),
        n("MatMul", ["ln", "w2"], ["z"], name="/fc2/MatMul"),
        n("Mul", ["z", "huge"], ["zb"], name="/scale/Mul"),
        n("Mul", ["zb", "small"], ["zs"], name="/unscale/Mul"),
        n("Softmax", ["zs"], ["y"], name="/softmax/Softmax", axis=-1),
    ]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", F32, ["N", 8])],
                          [helper.make_tensor_value_info("y", F32, ["N", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(m, x):
    # ORT's LayerNormFusion (extended level) mis-types a decomposed LN fed by Cast(fp16->fp32);
    # even at the basic level; the graph itself is valid (checker), so the test runs unoptimised.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _precision(model):
    """Node name -> elem type of its first float input after conversion."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    types.update({v.name: v.type.tensor_type.elem_type
                  for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)})
    return {n.name: types.get(n.input[0]) for n in model.graph.node if n.op_type != "Cast"}


def test_io_stays_fp32_blocked_ops_and_layernorm_pattern_stay_fp32():
    m = _model()
    assert layernorm_pattern_nodes(m.graph) == {"/ln/ReduceMean", "/ln/Sub", "/ln/Pow", "/ln/ReduceMean_1", "/ln/Add",
                                                "/ln/Sqrt", "/ln/Div", "/ln/Mul", "/ln/Add_1"}
    f = convert_fp16(m)
    onnx.checker.check_model(f)
    assert f.graph.input[0].type.tensor_type.elem_type == F32
    assert f.graph.output[0].type.tensor_type.elem_type == F32
    prec = _precision(f)
    assert prec["/fc1/MatMul"] == F16 and prec["/fc2/MatMul"] == F16
    for name in ("/ln/ReduceMean", "/ln/Sub", "/ln/Div", "/ln/Add_1", "/softmax/Softmax"):
        assert prec[name] == F32, name
    assert prec["/scale/Mul"] == F32  # initializer 1e5 > 65504 (init_max rule)
    assert {t.name: t.data_type for t in f.graph.initializer}["w1_fp16"] == F16
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(f, x), _run(m, x), atol=5e-3)


def test_data_rule_keeps_large_activations_fp32():
    m = _model()
    x = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    plain = _precision(convert_fp16(m))
    assert plain["/unscale/Mul"] == F16  # no data: only static rules
    f = convert_fp16(m, FP16Config(), source=NumpySource({"x": x}))
    prec = _precision(f)
    assert prec["/unscale/Mul"] == F32  # its input zb reaches ~1e5 on real data
    assert prec["/fc2/MatMul"] == F16  # small activations stay FP16
    meta = {p.key: p.value for p in f.metadata_props}
    assert "/unscale/Mul" in meta["trtopt.fp16.fp32_nodes"].split(",")


def test_fp16_io_and_node_block_list():
    m = _model()
    f = convert_fp16(m, FP16Config(keep_io_types=False, node_block_list=(r"^/fc1/",)))
    assert f.graph.input[0].type.tensor_type.elem_type == F16
    assert f.graph.output[0].type.tensor_type.elem_type == F16
    assert _precision(f)["/fc1/MatMul"] == F32
    out = _run(f, np.random.default_rng(1).standard_normal((4, 8)).astype(np.float16))
    assert out.dtype == np.float16
    with pytest.raises(ConfigError, match="invalid regular expression"):
        FP16Config(node_block_list=("(",))
