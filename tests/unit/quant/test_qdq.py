"""Q/DQ placement (TensorRT rules) and numerics against ONNX's reference evaluator and FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.calib import CalibrationConfig, CalibrationTable, NumpySource, calibrate
from trtopt.errors import IncompatibleArtifactError
from trtopt.onnx.graph import producers
from trtopt.quant import QuantizeConfig, quantize_qdq

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _model(tmp_path):
    """Conv -> Relu -> [Conv -> Relu -> Conv] + [Conv (downsample)] -> Relu -> GAP -> Gemm -> Relu -> MatMul."""
    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), f"w{len(inits)}")  # noqa: E731
    inits: list = []
    for shape in [(8, 3, 3, 3), (8, 8, 3, 3), (8, 8, 3, 3), (8, 8, 1, 1), (6, 8), (6, 4)]:
        inits.append(w(*shape))
    inits.append(numpy_helper.from_array(np.full(8, 0.1, np.float32), "b1"))
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b1"], ["c0"], name="/stem/Conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="/stem/Relu"),
        n("Conv", ["r0", "w1"], ["c1"], name="/layer1/conv1/Conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="/layer1/relu/Relu"),
        n("Conv", ["r1", "w2"], ["c2"], name="/layer1/conv2/Conv", pads=[1, 1, 1, 1]),
        n("Conv", ["r0", "w3"], ["d"], name="/layer1/downsample/Conv"),
        n("Add", ["c2", "d"], ["a"], name="/layer1/Add"),
        n("Relu", ["a"], ["r2"], name="/layer1/relu_1/Relu"),
        n("GlobalAveragePool", ["r2"], ["p"], name="/pool/GlobalAveragePool"),
        n("Flatten", ["p"], ["f"], name="/flatten/Flatten"),
        n("Gemm", ["f", "w4"], ["g"], name="/fc/Gemm", transB=1),
        n("Relu", ["g"], ["rg"], name="/fc_relu/Relu"),
        n("MatMul", ["rg", "w5"], ["y"], name="/head/MatMul"),
    ]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    return p, m


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qdq")
    path, m = _model(tmp)
    x = np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32)
    table = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(method="entropy"))
    return path, m, x, table


def _ort(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def test_every_weighted_input_comes_from_dequantize_with_zero_points_and_axes(setup):
    path, _, _, table = setup
    q = quantize_qdq(path, table).model
    onnx.checker.check_model(q)
    prod = producers(q.graph)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    weighted = [n for n in q.graph.node if n.op_type in WEIGHTED]
    assert len(weighted) == 6
    for node in weighted:
        for i in (0, 1):
            dq = prod[node.input[i]]
            assert dq.op_type == "DequantizeLinear", (node.name, i)
            qn = prod[dq.input[0]]
            assert qn.op_type == "QuantizeLinear"
            zp = inits[dq.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
            scale = inits[dq.input[1]]
            assert (scale > 0).all()
            axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
            if i == 0:
                assert scale.shape == () and axis is None
                assert scale == pytest.approx(np.float32(table.amax[qn.input[0]] / 127))
            else:
                w = inits[qn.input[0]]
                want_axis = {"Conv": 0, "Gemm": 0, "MatMul": 1}[node.op_type]
                assert axis == want_axis and scale.shape == (w.shape[want_axis],)
                red = tuple(a for a in range(w.ndim) if a != want_axis)
                np.testing.assert_allclose(scale, np.abs(w).max(axis=red) / 127, rtol=1e-6)
                assert w.dtype == np.float32  # weights stay float behind Q->DQ
    # outputs of weighted ops are not quantized; ReLU / pooling get no Q/DQ
    for n in q.graph.node:
        if n.op_type in ("Relu", "GlobalAveragePool", "Flatten"):
            assert prod.get(n.input[0]) is None or prod[n.input[0]].op_type != "DequantizeLinear"


def test_residual_add_quantizes_the_short_branch_only(setup):
    path, _, _, table = setup
    q = quantize_qdq(path, table).model
    prod = producers(q.graph)
    add = next(n for n in q.graph.node if n.op_type == "Add")
    ops = [prod[i].op_type for i in add.input]
    # c2 (longer path from r0: conv1, relu, conv2) fuses into the Add; the downsample branch is quantized
    assert ops == ["Conv", "DequantizeLinear"]
    q2 = quantize_qdq(path, table, QuantizeConfig(quantize_residual_add=False)).model
    add2 = next(n for n in q2.graph.node if n.op_type == "Add")
    assert [prod_op.op_type for prod_op in map(producers(q2.graph).get, add2.input)] == ["Conv", "Conv"]


def test_numerics_match_reference_evaluator_and_stay_close_to_fp32(setup):
    path, m, x, table = setup
    q = quantize_qdq(path, table).model
    y32 = _ort(m, x)
    yq = _ort(q, x)
    q19 = onnx.ModelProto()
    q19.CopyFrom(q)
    q19.opset_import[0].version = 19  # the reference evaluator implements Q/DQ from opset 19 (same semantics)
    yref = ReferenceEvaluator(q19).run(None, {"x": x})[0]
    # ORT and the reference may round an exact .5 tie differently (x*(1/s) vs x/s) on a few
    # elements, which then propagates through one sample; everything else must agree exactly.
    close = np.isclose(yq, yref, rtol=1e-4, atol=1e-4).all(axis=1)
    assert close.mean() >= 0.9
    assert np.linalg.norm(yq - yref) / np.linalg.norm(yref) < 5e-3
    rel = np.linalg.norm(yq - y32) / np.linalg.norm(y32)
    assert 0 < rel < 0.05  # quantization noise exists but is small
    cos = (yq * y32).sum() / (np.linalg.norm(yq) * np.linalg.norm(y32))
    assert cos > 0.998


def test_exclusions_by_name_and_op_type(setup):
    path, _, _, table = setup
    cfg = QuantizeConfig(exclude_nodes=(r"^/layer1/conv\d",), exclude_op_types=("MatMul",))
    q = quantize_qdq(path, table, cfg).model
    prod = producers(q.graph)
    state = {n.name: prod.get(n.input[0]) is not None and prod[n.input[0]].op_type == "DequantizeLinear"
             for n in q.graph.node if n.op_type in WEIGHTED}
    assert state == {"/stem/Conv": True, "/layer1/conv1/Conv": False, "/layer1/conv2/Conv": False,
                     "/layer1/downsample/Conv": True, "/fc/Gemm": True, "/head/MatMul": False}


def test_int8_plus_fp16_rest(setup):
    path, m, x, table = setup
    q = quantize_qdq(path, table, QuantizeConfig(fp16_rest=True)).model
    onnx.checker.check_model(q)
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) == 19
    assert q.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert q.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inits = {t.name: t for t in q.graph.initializer}
    dqs = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    assert dqs and all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in dqs)
    y32, yq = _ort(m, x), _ort(q, x)
    assert yq.dtype == np.float32
    assert np.linalg.norm(yq - y32) / np.linalg.norm(y32) < 0.06


def test_table_for_another_model_is_rejected_and_old_opset_is_upgraded(setup, tmp_path):
    path, m, _, _ = setup
    with pytest.raises(IncompatibleArtifactError, match="does not belong"):
        quantize_qdq(path, CalibrationTable({"other/tensor": 1.0}))
    old = onnx.ModelProto()
    old.CopyFrom(m)
    old.opset_import[0].version = 11  # an old opset is raised to 13, not refused
    q = quantize_qdq(old, CalibrationTable({"x": 1.0})).model
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) == 13
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)


def test_resnet18_export_every_residual_add_gets_one_quantized_skip_input(tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.export import export_onnx
    from trtopt.models.resnet import resnet18

    torch.manual_seed(0)
    path = export_onnx(resnet18(num_classes=10).eval(), torch.zeros(1, 3, 32, 32), tmp_path / "r18.onnx")
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    table = calibrate(path, NumpySource({"input": x}, batch_size=8))
    q = quantize_qdq(path, table).model
    prod = producers(q.graph)
    adds = [n for n in q.graph.node if n.op_type == "Add"]
    assert len(adds) == 8
    for add in adds:  # the conv branch fuses (left alone), the identity / downsample branch is quantized
        assert sorted(prod[i].op_type for i in add.input) == ["Conv", "DequantizeLinear"], add.name
    convs = [n for n in q.graph.node if n.op_type in WEIGHTED]
    assert len(convs) == 21 and all(prod[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    y32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    yq = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert (yq * y32).sum() / (np.linalg.norm(yq) * np.linalg.norm(y32)) > 0.99
