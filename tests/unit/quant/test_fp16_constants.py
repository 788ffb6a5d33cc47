"""FP16 conversion of real-model weight forms.

Every expected value comes from the FP32 model run with ONNX's reference evaluator.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.onnx.constants import iter_constants
from trtopt.onnx.io import save_onnx
from trtopt.onnx.walk import outer_scope_inputs
from trtopt.quant import convert_fp16
from trtopt.quant.fp16 import MASK_FILL, mask_constants

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT


def _const(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(arr, name))


def _ort(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inf = onnx.shape_inference.infer_shapes(model)
    t = {v.name: v.type.tensor_type.elem_type for v in (*inf.graph.value_info, *inf.graph.input, *inf.graph.output)}
    t.update({i.name: i.data_type for i in model.graph.initializer})
    return t


def _bn_model() -> onnx.ModelProto:
    """Paddle-style Conv -> BatchNormalization with every weight a Constant node; BN var up to 1e8."""
    rng = np.random.default_rng(0)
    var = np.array([1e8, 3e7] + [1.0, 2.0] * 7, np.float32)  # PP-OCRv4 det has running variances of 1e7-1e8
    mean = np.array([5e3, -2e3] + [0.1, 0.0] * 7, np.float32)
    nodes = [_const("w", (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)),
             _const("scale", np.ones(16, np.float32)), _const("bias", np.zeros(16, np.float32)),
             _const("mean", mean), _const("var", var),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "k"], ["ck"], name="gain"),
             helper.make_node("BatchNormalization", ["ck", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["y"], name="relu")]
    nodes.insert(0, helper.make_node("Constant", [], ["k"], name="k_const", value_float=2000.0))
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", F32, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", F32, ["N", 16, 8, 8])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_constant_node_weights_are_range_checked_and_converted():
    m = _bn_model()
    res = convert_fp16(m)
    f = res.model
    assert list(res.fp32_reasons) == ["bn"]  # var (Constant node) 1e8 > 65504: BN stays FP32; Conv/Mul go FP16
    t = _types(f)
    assert t["c"] == F16 and t["ck"] == F16 and t["bn"] == F32
    # Constant-node weights read by FP16 nodes become FP16 data (the model shrinks), no runtime Cast
    assert {i.name: i.data_type for i in f.graph.initializer}["w_fp16"] == F16
    assert not any(n.op_type == "Constant" and n.output[0] == "w" for n in f.graph.node)
    bare = onnx.ModelProto()
    bare.CopyFrom(f)
    del bare.metadata_props[:]
    assert bare.ByteSize() < 0.75 * m.ByteSize()  # before: the FP32 Constant weights stayed (plus Casts)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    # reference: Conv and Mul by the reference evaluator, BN (inference form) and ReLU in numpy
    # (the evaluator's BatchNormalization uses batch statistics, not the running ones)
    r = ReferenceEvaluator(m).run(None, {"x": x}, intermediate=True)
    bn = (r["ck"] - r["mean"][:, None, None]) / np.sqrt(r["var"][:, None, None] + 1e-5)
    ref = np.maximum(bn * r["scale"][:, None, None] + r["bias"][:, None, None], 0)
    out = _ort(f, {"x": x})
    assert np.isfinite(out).all() and ref.max() > 0.1
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * float(np.abs(ref).max()))


def _mask_model(fill: float) -> onnx.ModelProto:
    """Attention scores + additive mask (Constant, finfo(float32).min on padding) -> Softmax."""
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 1, 4), np.float32)
    mask[0, :, 2:] = fill  # sample 0: last two keys are padding
    mask[1, :, :] = fill  # sample 1: all padding (a fully masked row)
    nodes = [_const("wq", (rng.standard_normal((8, 4)) * 0.5).astype(np.float32)), _const("mask", mask),
             helper.make_node("MatMul", ["x", "wq"], ["s"], name="scores"),
             helper.make_node("Add", ["s", "mask"], ["sm"], name="add_mask"),
             helper.make_node("Softmax", ["sm"], ["y"], name="softmax", axis=-1)]
    g = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", F32, [2, 3, 8])],
                          [helper.make_tensor_value_info("y", F32, [2, 3, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_additive_mask_beyond_fp16_is_clamped_not_inf():
    m = _mask_model(float(np.finfo(np.float32).min))
    assert mask_constants(m) == {"mask": MASK_FILL}
    f = convert_fp16(m).model
    assert _types(f)["sm"] == F16  # the Add runs in FP16 with the clamped mask
    x = np.random.default_rng(2).standard_normal((2, 3, 8)).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    out = _ort(f, {"x": x})
    assert np.isfinite(out).all()  # before: -inf mask -> NaN for the fully masked sample
    np.testing.assert_allclose(out[0], ref[0], atol=2e-3)
    # true FP16 arithmetic (the reference evaluator computes float16 ops in float16; ONNX Runtime's CPU
    # runs this Add in float32 and keeps the scores, which no GPU does) gives FP32's answer everywhere
    np.testing.assert_allclose(ReferenceEvaluator(f).run(None, {"x": x})[0], ref, atol=2e-3)


def test_out_of_range_constant_not_a_mask_keeps_consumer_fp32():
    m = _mask_model(float(np.finfo(np.float32).min))
    m.graph.node[-1].op_type = "Relu"  # no Softmax: clamping would change the output, so no mask rule
    del m.graph.node[-1].attribute[:]
    assert mask_constants(m) == {}
    res = convert_fp16(m)
    f = res.model
    assert "add_mask" in res.fp32_reasons
    x = np.random.default_rng(2).standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(f, {"x": x}), ReferenceEvaluator(m).run(None, {"x": x})[0], rtol=1e-2)


def test_iter_constants_covers_every_form_and_subgraphs():
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([7e4], np.float32), "sv"),
                                   numpy_helper.from_array(np.array([1], np.int64), "si"), [3])
    body = helper.make_graph([helper.make_node("Constant", [], ["b"], value_floats=[1.0, 1e9])], "then", [],
                             [helper.make_tensor_value_info("b", F32, [2])])
    els = helper.make_graph([helper.make_node("Constant", [], ["e"], value_floats=[0.0, 1.0])], "else", [],
                            [helper.make_tensor_value_info("e", F32, [2])])
    nodes = [helper.make_node("Constant", [], ["s"], sparse_value=sp),
             helper.make_node("Constant", [], ["f"], value_float=1.5),
             helper.make_node("If", ["c"], ["y"], name="if0", then_branch=body, else_branch=els)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", F32, [2])],
                          [numpy_helper.from_array(np.ones(2, np.float32), "init")])
    found = {(c.graph_path, c.name, c.kind): c.array.tolist() for c in iter_constants(helper.make_model(g))}
    assert found == {("", "init", "initializer"): [1.0, 1.0], ("", "s", "sparse_value"): [0.0, 7e4, 0.0],
                     ("", "f", "value_float"): 1.5, ("if0.then_branch", "b", "value_floats"): [1.0, 1e9],
                     ("if0.else_branch", "e", "value_floats"): [0.0, 1.0]}


def _if_model() -> onnx.ModelProto:
    """x -> MatMul (top) -> If(c): then h @ W1, else h @ W2; the 44 branch weights are top-level initializers."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.3).astype(np.float32), "w0")]
    then_nodes, else_nodes = [], []
    prev_t = prev_e = "h"
    for k in range(22):  # weights used ONLY inside the branches (outer-scope references)
        for nodes, prev, tag in ((then_nodes, prev_t, "t"), (else_nodes, prev_e, "e")):
            w = f"w{tag}{k}"
            inits.append(numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.35).astype(np.float32), w))
            nodes.append(helper.make_node("MatMul", [prev, w], [f"{tag}{k}"]))
        prev_t, prev_e = f"t{k}", f"e{k}"
    vi = [helper.make_tensor_value_info("t21", F32, ["N", 8])], [helper.make_tensor_value_info("e21", F32, ["N", 8])]
    then_g = helper.make_graph(then_nodes, "then", [], vi[0])
    else_g = helper.make_graph(else_nodes, "else", [], vi[1])
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="top"),
             helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)]
    g = helper.make_graph(nodes, "ifm", [helper.make_tensor_value_info("x", F32, ["N", 8]),
                                         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", F32, ["N", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_weights_used_only_in_subgraphs_are_kept(tmp_path):
    m = _if_model()
    assert len(m.graph.initializer) == 45
    f = convert_fp16(m).model
    inits = {i.name: i for i in f.graph.initializer}
    branch = next(n for n in f.graph.node if n.op_type == "If")
    reads = set(outer_scope_inputs(branch))
    # every weight the branches read is still there (before: 45 initializers -> 3), as the FP16 copy they compute with
    assert {f"wt{k}_fp16" for k in range(22)} | {f"we{k}_fp16" for k in range(22)} <= reads <= set(inits) | {"h"}
    assert all(inits[f"{t}{k}_fp16"].data_type == F16 for t in ("wt", "we") for k in range(22))
    assert _types(f)["h"] == F16  # the top MatMul is FP16 and the branches read h as it is
    path = save_onnx(f, tmp_path / "if16.onnx")  # full checker + ONNX Runtime load
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        ref = ReferenceEvaluator(m).run(None, feeds)[0]
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2 * float(np.abs(ref).max()))


def test_int8_weight_storage_keeps_weights_read_only_in_subgraphs(tmp_path):
    """quantize_qdq(weight_storage=int8) drops float originals: never the ones If branches still read."""
    from trtopt.calib import CalibrationTable
    from trtopt.quant import QuantizeConfig, quantize_qdq

    m = _if_model()
    q = quantize_qdq(m, CalibrationTable(amax={"x": 4.0}, method="minmax"), QuantizeConfig(weight_storage="int8")).model
    names = {i.name for i in q.graph.initializer}
    assert {f"wt{k}" for k in range(22)} | {f"we{k}" for k in range(22)} <= names
    path = save_onnx(q, tmp_path / "q.onnx")  # full checker + ONNX Runtime load
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    feeds = {"x": x, "c": np.array(True)}
    ref = ReferenceEvaluator(m).run(None, feeds)[0]
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(out, ref, rtol=0.1, atol=0.1 * float(np.abs(ref).max()))


def test_cli_fp16_names_what_stayed_fp32_and_why(tmp_path, capsys):
    """`trtopt quantize --fp16` on the Paddle-style model: not "0 node(s) kept", but the BN and its reason."""
    from trtopt.cli.main import main

    src = save_onnx(_bn_model(), tmp_path / "bn.onnx")
    assert main(["quantize", str(src), "--fp16", "--out", str(tmp_path / "bn16.onnx")]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "FP16: 1 node(s) kept in FP32" in err
    assert "Constant node beyond 65504: bn" in err
    assert "not checked" in err  # no --calib-data: the overflow preview did not run, and it says so
    onnx.checker.check_model(str(tmp_path / "bn16.onnx"), full_check=True)

