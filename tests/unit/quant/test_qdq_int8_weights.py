"""Pre-quantized INT8 weight storage: same numerics as float-behind-Q/DQ, integer kernels on ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.backends.onnxrt import OnnxRuntimeRunner
from trtopt.calib import CalibrationConfig, NumpySource, calibrate
from trtopt.errors import ConfigError
from trtopt.quant import QuantizeConfig, quantize_qdq


@pytest.fixture
def conv_gemm(tmp_path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((10, 8 * 3 * 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c"], name="/conv/Conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="/flat/Flatten"),
        helper.make_node("Gemm", ["f", "W2"], ["y"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    x = rng.standard_normal((32, 4, 5, 5)).astype(np.float32)
    table = calibrate(path, NumpySource({"x": x}, batch_size=8), CalibrationConfig(method="minmax"))
    return path, x, table


def test_int8_storage_matches_float_storage(conv_gemm):
    path, x, table = conv_gemm
    flt = quantize_qdq(path, table, QuantizeConfig(weight_storage="float")).model
    i8 = quantize_qdq(path, table, QuantizeConfig(weight_storage="int8")).model
    inits = {t.name: t for t in i8.graph.initializer}
    assert "W1" not in inits and "W2" not in inits  # float originals dropped
    prod = {o: n for n in i8.graph.node for o in n.output}
    for node in i8.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dq = prod[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            assert inits[dq.input[0]].data_type == TensorProto.INT8
            assert prod[node.input[0]].op_type == "DequantizeLinear"
    ref_f = ReferenceEvaluator(flt).run(None, {"x": x})[0]
    ref_i = ReferenceEvaluator(i8).run(None, {"x": x})[0]
    np.testing.assert_allclose(ref_i, ref_f, rtol=1e-5, atol=1e-5)
    with OnnxRuntimeRunner(i8.SerializeToString()) as r:
        np.testing.assert_allclose(r.infer({"x": x})["y"], ref_f, rtol=1e-3, atol=1e-3)


def test_weight_storage_is_validated():
    with pytest.raises(ConfigError, match="weight_storage"):
        QuantizeConfig(weight_storage="int4")


def test_table_from_another_model_warns(conv_gemm, caplog):
    path, _, table = conv_gemm
    other = onnx.load(str(path))
    other.graph.initializer[0].float_data[:] = []  # same names, different weights
    w = numpy_helper.to_array(other.graph.initializer[0]) * 0.5
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, other.graph.initializer[0].name))
    with caplog.at_level("WARNING", logger="trtopt"):
        quantize_qdq(path, table)
    assert "different model" not in caplog.text
    with caplog.at_level("WARNING", logger="trtopt"):
        quantize_qdq(other, table)
    assert "different model" in caplog.text
