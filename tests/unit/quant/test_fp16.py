"""FP16 conversion: graph I/O stays FP32, blocked ops / LayerNorm pattern / data rule stay FP32, If/Loop bodies
are converted (checked in true FP16 arithmetic with ONNX's ReferenceEvaluator), a no-op result is an error."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.errors import ConfigError, InputError
from trtopt.onnx.io import save_onnx
from trtopt.quant import CalibData, FP16Config, convert_fp16, layernorm_pattern_nodes, quantize

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
    f = convert_fp16(m).model
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
    plain = _precision(convert_fp16(m).model)
    assert plain["/unscale/Mul"] == F16  # no data: only static rules
    res = quantize(m, None, FP16Config(), CalibData({"x": x}))
    prec = _precision(res.model)
    assert prec["/unscale/Mul"] == F32  # its input zb reaches ~1e5 on real data
    assert prec["/fc2/MatMul"] == F16  # small activations stay FP16
    assert "/unscale/Mul" in res.fp16_reasons


def test_fp16_io_and_node_block_list():
    m = _model()
    f = convert_fp16(m, FP16Config(keep_io_types=False, node_block_list=(r"^/fc1/",))).model
    assert f.graph.input[0].type.tensor_type.elem_type == F16
    assert f.graph.output[0].type.tensor_type.elem_type == F16
    assert _precision(f)["/fc1/MatMul"] == F32
    out = _run(f, np.random.default_rng(1).standard_normal((4, 8)).astype(np.float16))
    assert out.dtype == np.float16
    with pytest.raises(ConfigError, match="invalid regular expression"):
        FP16Config(node_block_list=("(",))


def _branchy_model() -> onnx.ModelProto:
    """All compute inside If(c): then relu(x @ W1) @ W2, else x @ W3 + b (branch-local weights as Constant nodes)."""
    rng = np.random.default_rng(0)
    n = helper.make_node

    def const(name, shape):
        return n("Constant", [], [name], name=f"{name}_c", value=numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.3).astype(np.float32), name))

    out = lambda name: [helper.make_tensor_value_info(name, F32, ["N", 4])]  # noqa: E731
    then_g = helper.make_graph([n("MatMul", ["x", "w1"], ["t1"], name="then_fc1"),
                                n("Relu", ["t1"], ["t2"], name="relu"),
                                n("MatMul", ["t2", "w2"], ["t3"], name="then_fc2")], "then", [], out("t3"))
    else_g = helper.make_graph([const("w3", (8, 4)), const("b", (4,)), n("MatMul", ["x", "w3"], ["e1"], name="else_fc"),
                                n("Add", ["e1", "b"], ["e2"], name="else_bias")], "else", [], out("e2"))
    inits = [numpy_helper.from_array((rng.standard_normal((8, 16)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((16, 4)) * 0.3).astype(np.float32), "w2")]
    g = helper.make_graph([n("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)], "ifm",
                          [helper.make_tensor_value_info("x", F32, ["N", 8]),
                           helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", F32, ["N", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _loop_model() -> onnx.ModelProto:
    """h = x; repeat M times: h = tanh(h @ W) -- the compute lives in the Loop body, h is loop-carried (FP32)."""
    n = helper.make_node
    w = numpy_helper.from_array((np.random.default_rng(2).standard_normal((8, 8)) * 0.5).astype(np.float32), "w")
    body = helper.make_graph(
        [n("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         n("MatMul", ["h_in", "w"], ["hw"], name="body_fc"), n("Tanh", ["hw"], ["h_out"], name="body_tanh")], "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", F32, ["N", 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", F32, ["N", 8])])
    g = helper.make_graph([n("Loop", ["M", "", "x"], ["y"], name="loop", body=body)], "loopm",
                          [helper.make_tensor_value_info("x", F32, ["N", 8]),
                           helper.make_tensor_value_info("M", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", F32, ["N", 8])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _body(model, node: str, attr: str) -> onnx.GraphProto:
    cf = next(nd for nd in model.graph.node if nd.name == node)
    return next(a.g for a in cf.attribute if a.name == attr)


def test_compute_inside_if_branches_is_converted_to_fp16(tmp_path):
    from trtopt.quant.fp16 import blocked_nodes

    m = _branchy_model()
    f = convert_fp16(m).model
    assert not blocked_nodes(m, FP16Config())  # the If itself is not "kept in FP32" any more
    then_g, else_g = _body(f, "branch", "then_branch"), _body(f, "branch", "else_branch")
    casts = {nd.output[0]: nd for g in (then_g, else_g) for nd in g.node if nd.op_type == "Cast"}
    # the branches compute in FP16: x is cast once outside, the weights are FP16 data, the branch outputs cast back
    assert {i.name: i.data_type for i in f.graph.initializer} == {"w1_fp16": F16, "w2_fp16": F16}
    assert {i.name: i.data_type for i in else_g.initializer} == {"w3_fp16": F16, "b_fp16": F16}
    assert [o.name for o in then_g.output] == ["t3"] and casts["t3"].attribute[0].i == F32
    assert casts["e2"].attribute[0].i == F32
    assert [nd.op_type for nd in f.graph.node] == ["Cast", "If"] and f.graph.node[0].attribute[0].i == F16
    assert f.graph.output[0].type.tensor_type.elem_type == F32
    path = save_onnx(f, tmp_path / "if16.onnx")
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        ref = ReferenceEvaluator(m).run(None, feeds)[0]
        out = ReferenceEvaluator(str(path)).run(None, feeds)[0]  # true FP16 arithmetic inside the branch
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2 * float(np.abs(ref).max()))


def test_loop_body_is_converted_with_loop_carried_values_kept_fp32(tmp_path):
    m = _loop_model()
    f = convert_fp16(m).model
    body = _body(f, "loop", "body")
    ops = [(nd.op_type, nd.attribute[0].i if nd.op_type == "Cast" else None) for nd in body.node]
    assert ("Cast", F16) in ops and ops[-1] == ("Cast", F32)  # h_in cast to FP16, h_out back to FP32
    assert [i.type.tensor_type.elem_type for i in body.input][2] == F32
    assert {i.name: i.data_type for i in f.graph.initializer} == {"w_fp16": F16}
    path = save_onnx(f, tmp_path / "loop16.onnx")
    feeds = {"x": np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32), "M": np.array(3, np.int64)}
    ref = ReferenceEvaluator(m).run(None, feeds)[0]
    np.testing.assert_allclose(ReferenceEvaluator(str(path)).run(None, feeds)[0], ref, rtol=2e-2, atol=2e-2)


def test_fp16_conversion_that_leaves_everything_fp32_is_an_error(tmp_path, capsys):
    from trtopt.cli.main import main
    m = _branchy_model()
    with pytest.raises(InputError, match=r"no node computing in FP16.*branch: op type If"):
        convert_fp16(m, FP16Config(op_block_list=("If",)))  # the user keeps the If whole: nothing is left
    soft = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="only_softmax", axis=-1)], "s",
                             [helper.make_tensor_value_info("x", F32, ["N", 8])],
                             [helper.make_tensor_value_info("y", F32, ["N", 8])])
    src = save_onnx(helper.make_model(soft, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "soft.onnx")
    assert main(["quantize", str(src), "--fp16", "--out", str(tmp_path / "soft16.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no node computing in FP16" in err and "only_softmax: op type Softmax" in err and "Traceback" not in err
    assert not (tmp_path / "soft16.onnx").exists()



@pytest.mark.tensorrt_rtx
def test_fp16_branches_build_with_tensorrt_rtx(tmp_path):
    """TensorRT for RTX (no GPU needed) parses and builds the If whose branches now compute in FP16."""
    pytest.importorskip("tensorrt_rtx")
    from trtopt.run.engines import build_variant

    path = save_onnx(convert_fp16(_branchy_model()).model, tmp_path / "if16.onnx")
    from trtopt.backends.tensorrt import Profile

    b = build_variant("branchy", "fp16", path, tmp_path / "engines", shapes=(Profile("x", (1, 8), (4, 8), (16, 8)),))
    assert b.status == "ok", b.reason
