"""Layer-wise comparison: a deliberately perturbed layer is ranked first, through Q/DQ renaming."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.benchmark.layerwise import compare_layers, format_layers
from trtopt.errors import InputError
from trtopt.onnx.graph import module_name

RNG = np.random.default_rng(0)
WEIGHTS = [RNG.normal(size=(16, 16)).astype(np.float32) / 4 for _ in range(3)]


def _model(weights, qdq=False):
    """x -> [MatMul -> Relu] x 3; with qdq, a Q/DQ pair (new tensor names) before every MatMul."""
    nodes, inits, cur = [], [], "input"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        src = cur
        if qdq:
            inits += [numpy_helper.from_array(np.array(0.05, np.float32), f"s{i}"),
                      numpy_helper.from_array(np.array(0, np.int8), f"z{i}")]
            nodes += [helper.make_node("QuantizeLinear", [cur, f"s{i}", f"z{i}"], [f"q{i}"], name=f"q_{i}"),
                      helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}", f"z{i}"], [f"dq{i}"], name=f"dq_{i}")]
            src = f"dq{i}"
        mm, out = f"mm{i}{'_q' if qdq else ''}", f"relu{i}{'_q' if qdq else ''}"
        nodes += [helper.make_node("MatMul", [src, f"w{i}"], [mm], name=f"/layers/{i}/MatMul"),
                  helper.make_node("Relu", [mm], [out], name=f"/layers/{i}/act/Relu")]
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["logits"], name="out"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_module_name_mapping():
    assert module_name("/features/0/Conv") == "features.0"
    assert module_name("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_name("/classifier/classifier.1/Gemm_1") == "classifier.1"
    assert module_name("/Relu") is None and module_name("Conv_0") is None


@pytest.mark.parametrize("qdq", [False, True])
def test_perturbed_layer_ranks_first(tmp_path, qdq):
    perturbed = [w.copy() for w in WEIGHTS]
    perturbed[1] = perturbed[1] + RNG.normal(size=(16, 16)).astype(np.float32) * 0.2
    ref, cand = _model(WEIGHTS), _model(perturbed, qdq=qdq)
    onnx.save(ref, tmp_path / "fp32.onnx")
    x = {"input": np.abs(RNG.normal(size=(32, 16))).astype(np.float32)}
    layers = compare_layers(tmp_path / "fp32.onnx", cand, x)
    assert layers[0].node == "/layers/1/MatMul" and layers[0].module == "layers.1"
    by = {e.node: e for e in layers}
    assert set(by) == {f"/layers/{i}/MatMul" for i in range(3)} | {f"/layers/{i}/act/Relu" for i in range(3)}
    if not qdq:  # layer 0 is untouched: exact
        assert math.isinf(by["/layers/0/MatMul"].sqnr_db) and by["/layers/0/MatMul"].max_abs_err == 0
    # error accumulates downstream, yet the local ranking still blames layer 1, not layer 2
    assert by["/layers/2/MatMul"].sqnr_db <= by["/layers/1/MatMul"].sqnr_db + 3
    assert by["/layers/1/MatMul"].local_sqnr_db < by["/layers/2/MatMul"].local_sqnr_db
    rows = format_layers(layers, top=2)
    assert rows[0][:3] == ["/layers/1/MatMul", "layers.1", "MatMul"] and len(rows) == 2
    assert layers[0].to_dict()["node"] == "/layers/1/MatMul"


def test_unmatched_models_are_rejected():
    other = _model(WEIGHTS)
    for n in other.graph.node:
        n.name = "renamed_" + n.name
    with pytest.raises(InputError, match="no layer"):
        compare_layers(_model(WEIGHTS), other, {"input": np.ones((2, 16), np.float32)})
