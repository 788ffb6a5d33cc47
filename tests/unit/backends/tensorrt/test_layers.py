"""Compiled-layer parsing and the INT8/FP16 precision report, on recorded text (no TensorRT needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.tensorrt.layers import inspector_layers, parse_layers_block, precision_report
from trtopt.errors import BuildError
from trtopt.placement import compute_nodes

# Recorded from a TensorRT-for-RTX 1.7.1.116 build of a Q/DQ conv (trimmed constants).
BLOCK = "\n".join([
    'Layers:',
    'Name: __mye368_0_myl0_0, LayerType: shape_call, Inputs: [], Constants: [], Outputs: [], TacticNa'
    'me: , StreamId: 0, Metadata:',
    'Name: __myl_MulMinMaxRounCastReplConc_myl0_1, LayerType: kgen, Inputs: [ { Name: input, Dimensio'
    'ns: [-1,1,8,8], Datatype: Float, Format: (Linear) Row major linear format }], Constants: [], Out'
    'puts: [ { Name: a, Dimensions: [-1,4,8,8], Datatype: Int8, Format: (NHWC) Channel major format }'
    '], TacticName: __myl_x, StreamId: 0, Metadata: [ONNX Layer: node_of_xq][ONNX Layer: /features/0/'
    'Conv][ONNX Layer: node_of_xdq]',
    'Name: /features/0/Conv_myl0_2, LayerType: correlation, Inputs: [ { Name: a, Dimensions: [-1,4,8,'
    '8], Datatype: Int8, Format: (NHWC) Channel major format }], Constants: [ { Name: w, Dimensions: '
    '[16,4,3,3], Datatype: Int8, Format: (NHWC) Channel major format }, { Name: b, Dimensions: [1,16,'
    '1,1], Datatype: Float, Format: (NHWC) Channel major format }], Outputs: [ { Name: c, Dimensions:'
    ' [-1,16,8,8], Datatype: Float, Format: (NHWC) Channel major format }], TacticName: __myelin_CASK'
    '_STUB, StreamId: 0, Metadata: [ONNX Layer: /features/0/Conv][ONNX Layer: node_of_xdq][ONNX Layer'
    ': node_of_wdq]',
    'Name: /classifier/Gemm_myl0_4, LayerType: gemm, Inputs: [ { Name: p, Dimensions: [-1,16], Dataty'
    'pe: Float, Format: (Linear) Row major linear format }], Constants: [], Outputs: [ { Name: logits'
    ', Dimensions: [-1,10], Datatype: Float, Format: (Linear) Row major linear format }], TacticName:'
    ' __myelin_CASK_STUB, StreamId: 0, Metadata: [ONNX Layer: /classifier/Gemm]',
    '',
    'I/O Tensors:',
    ' Name: input, IOMode: Input, DataType: Float, Dimensions: [-1,1,8,8]',
    '',
])


def test_layers_block_fields():
    layers = parse_layers_block(BLOCK)
    assert [ly["name"] for ly in layers] == ["__mye368_0_myl0_0", "__myl_MulMinMaxRounCastReplConc_myl0_1",
                                             "/features/0/Conv_myl0_2", "/classifier/Gemm_myl0_4"]
    conv = layers[2]
    assert conv["type"] == "correlation" and conv["inputs"] == ["INT8"] and conv["constants"] == ["INT8", "FP32"]
    assert conv["outputs"] == ["FP32"] and conv["onnx_nodes"] == ["/features/0/Conv", "node_of_xdq", "node_of_wdq"]
    assert layers[0]["onnx_nodes"] == [] and layers[0]["inputs"] == []


def _graph(quantize_conv: bool):
    """input -> [Q/DQ] -> Conv (unnamed Q/DQ nodes, as the exporter leaves them) -> ... -> Gemm (float)."""
    inits = [numpy_helper.from_array(np.ones((16, 1, 3, 3), np.float32), "w"),
             numpy_helper.from_array(np.ones((10, 16), np.float32), "fc"),
             numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]
    nodes, x, w = [], "input", "w"
    if quantize_conv:
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
                  helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
                  helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wdq0"]),
                  helper.make_node("Identity", ["wdq0"], ["wdq"])]
        x, w = "xdq", "wdq"
    nodes += [helper.make_node("Conv", [x, w], ["c"], name="/features/0/Conv"),
              helper.make_node("GlobalAveragePool", ["c"], ["p4"]),
              helper.make_node("Flatten", ["p4"], ["p"]),
              helper.make_node("Gemm", ["p", "fc"], ["logits"], transB=1, name="/classifier/Gemm")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g)


def test_compute_nodes_quantized_through_layout_ops():
    got = [(n.name, q) for n, q in compute_nodes(_graph(True).graph)]
    assert got == [("/features/0/Conv", True), ("/classifier/Gemm", False)]
    assert [q for _n, q in compute_nodes(_graph(False).graph)] == [False, False]


def test_report_counts_int8_and_names_fallbacks():
    model = _graph(True)
    rep = precision_report(model, parse_layers_block(BLOCK))
    assert rep.summary() == "quantized in ONNX: 1, compiled INT8: 1, fell back to float: 0"
    assert rep.counts() == {"FP32": 1, "INT8": 1}
    rep.raise_if_fallbacks("m.onnx")  # no error
    # the same conv compiled in float (what wrong-axis weight scales produce)
    floated = BLOCK.replace("Datatype: Int8", "Datatype: Float")
    rep = precision_report(model, parse_layers_block(floated))
    assert rep.summary() == "quantized in ONNX: 1, compiled INT8: 0, fell back to float: 1"
    assert rep.fallback_lines() == ["/features/0/Conv (Conv, module features.0): FP32"]
    with pytest.raises(BuildError, match=r"1 of 1 quantized layers compiled in float \(--strict\)"):
        rep.raise_if_fallbacks("m.onnx")


def test_no_layer_list_is_unknown_not_a_pass():
    rep = precision_report(_graph(True), [])
    assert not rep.available and "unknown" in rep.summary()
    with pytest.raises(BuildError, match="needs the compiled layer list"):
        rep.raise_if_fallbacks("m.onnx")


def test_inspector_json_of_tensorrt_10_gives_the_same_layers():
    doc = {"Layers": [{"Name": "/features/0/Conv", "LayerType": "CaskConvolution",
                       "Inputs": [{"Name": "xq", "Format/Datatype": "Channel major INT8 format"}],
                       "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}],
                       "Metadata": "[ONNX Layer: /features/0/Conv][ONNX Layer: node_of_xdq]"},
                      {"Name": "/classifier/Gemm", "LayerType": "CaskGemmMatrixMultiply",
                       "Inputs": [{"Name": "p", "Datatype": "Half"}], "Metadata": "[ONNX Layer: /classifier/Gemm]"}]}
    layers = inspector_layers(json.dumps(doc))
    assert layers[0]["inputs"] == ["INT8"] and layers[1]["inputs"] == ["FP16"]
    rep = precision_report(_graph(True), layers)
    assert rep.counts() == {"FP16": 1, "INT8": 1} and rep.int8 == 1
    assert inspector_layers("not json") == []
