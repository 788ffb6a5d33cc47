"""`trtopt doctor`: one finding per kind of real-model trouble, found before any work is done."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.dim_graphs import qmark_model
from trtopt.cli.main import main
from trtopt.doctor import diagnose


def _conv_model(opset: int = 17, batch_dim=-1, weight_in_constant_node: bool = False, extra_nodes=(),
                extra_inits=(), dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(w, "W")]
    if weight_in_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["W"], name="w_const", value=numpy_helper.from_array(w, "W")))
        inits = []
    x = helper.make_tensor_value_info("x", dtype, [batch_dim, 3, 8, 8])
    y = helper.make_tensor_value_info("y", dtype, None)
    g = helper.make_graph(nodes + list(extra_nodes), "g", [x], [y], inits + list(extra_inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _codes(report) -> dict[str, str]:
    return {f.code: f.severity for f in report.findings}


def test_paddle_style_model_opset_minus_one_batch_and_constant_nodes(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_conv_model(opset=11, batch_dim=-1, weight_in_constant_node=True), p)
    r = diagnose(p)
    assert r.opset == 11 and "upgrade" in next(f.message for f in r.findings if f.code == "opset")
    assert "dim-values" in _codes(r) and r.inputs[0]["dynamic_axes"] == [0]
    assert next(f for f in r.findings if f.code == "constant-nodes").detail["count"] == 1
    assert next(f for f in r.findings if f.code == "weighted-layers").detail == {"layers": 1, "constant_weight": 1}
    assert r.worst == "info"


def test_weights_reaching_the_layer_through_identity_or_transpose_count_as_constant(tmp_path):
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["W"], ["W_id"]), helper.make_node("MatMul", ["x", "W_id"], ["h"]),
             helper.make_node("Transpose", ["W2"], ["W2_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "W2_t"], ["y"]), helper.make_node("MatMul", ["y", "x_t"], ["z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
                                       helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [8, 3])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w, "W2")])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    # two weights are constants behind Identity / Transpose; the third MatMul multiplies two activations
    assert next(f for f in diagnose(p).findings if f.code == "weighted-layers").detail == \
        {"layers": 3, "constant_weight": 2}


def test_weights_inside_if_branches_are_reported_not_counted_as_main_graph_layers(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["t"], name="mm_then")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)],
                          "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    p = tmp_path / "if.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    r = diagnose(p)
    cf = next(f for f in r.findings if f.code == "control-flow")
    assert cf.severity == "warn" and cf.detail["subgraph_layers"] == {"branch.then_branch": 1}
    assert _codes(r)["weighted-layers"] == "error"  # nothing to quantize in the main graph
    assert "non-batch-inputs" in _codes(r)  # the scalar condition


def test_constants_beyond_fp16_range_found_in_constant_nodes_and_subgraphs(tmp_path):
    big = helper.make_node("Constant", [], ["big"], name="c_big",
                           value=numpy_helper.from_array(np.array([1e8], np.float32), "big"))
    add = helper.make_node("Add", ["y", "big"], ["z"], name="add")
    m = _conv_model(extra_nodes=[big, add])
    m.graph.output[0].name = "z"
    p = tmp_path / "big.onnx"
    onnx.save(m, p)
    f = next(f for f in diagnose(p).findings if f.code == "fp16-range")
    assert f.severity == "warn" and f.detail["constants"][0].startswith("big ")


def test_already_quantized_and_float16_graphs_are_warnings(tmp_path):
    """trtopt's own INT8/FP16 models look like this: calibrate/quantize refuse them, build and bench take them."""
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    q = [helper.make_node("QuantizeLinear", ["y", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["d"])]
    m = _conv_model(extra_nodes=q, extra_inits=[s])
    m.graph.output[0].name = "d"
    onnx.save(m, tmp_path / "q.onnx")
    assert _codes(diagnose(tmp_path / "q.onnx"))["already-quantized"] == "warn"
    m16 = _conv_model(dtype=TensorProto.FLOAT16)
    m16.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16), "W"))
    onnx.save(m16, tmp_path / "h.onnx")
    assert _codes(diagnose(tmp_path / "h.onnx"))["float16-graph"] == "warn"
    assert "float16-graph" not in _codes(diagnose(tmp_path / "q.onnx"))


def test_external_data_and_missing_files(tmp_path):
    m = _conv_model()
    p = tmp_path / "ext.onnx"
    onnx.save(m, p, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    f = next(f for f in diagnose(p).findings if f.code == "external-data")
    assert f.severity == "info" and f.detail["files"] == ["ext.data"] and f.detail["bytes"] > 0
    (tmp_path / "ext.data").unlink()
    f = next(f for f in diagnose(p).findings if f.code == "external-data")
    assert f.severity == "error" and f.detail["missing"] == ["ext.data"]


def test_swish_with_paddle_beta_is_found(tmp_path):
    beta = helper.make_node("Constant", [], ["beta"], value=numpy_helper.from_array(np.array(1.0, np.float32), "b"))
    nodes = [beta, helper.make_node("Mul", ["y", "beta"], ["yb"]), helper.make_node("Sigmoid", ["yb"], ["sg"]),
             helper.make_node("Mul", ["y", "sg"], ["z"]),
             # a gate on another tensor is not SiLU
             helper.make_node("Sigmoid", ["y"], ["g2"]), helper.make_node("Mul", ["z", "g2"], ["z2"])]
    m = _conv_model(extra_nodes=nodes)
    m.graph.output[0].name = "z2"
    onnx.save(m, tmp_path / "s.onnx")
    assert next(f for f in diagnose(tmp_path / "s.onnx").findings if f.code == "silu").detail["count"] == 1


def test_cli_json_strict_and_bad_input(tmp_path, capsys):
    onnx.save(_conv_model(), tmp_path / "ok.onnx")
    assert main(["doctor", str(tmp_path / "ok.onnx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["worst"] == "info" and data["inputs"][0]["name"] == "x"
    assert main(["inspect", "model", str(tmp_path / "ok.onnx")]) == 0
    capsys.readouterr()
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    m = _conv_model(extra_nodes=[helper.make_node("QuantizeLinear", ["y", "s"], ["q"]),
                                 helper.make_node("DequantizeLinear", ["q", "s"], ["d"])], extra_inits=[s])
    m.graph.output[0].name = "d"
    onnx.save(m, tmp_path / "q.onnx")
    assert main(["doctor", str(tmp_path / "q.onnx"), "--strict"]) == 0  # warnings only
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "relu.onnx")
    assert main(["doctor", str(tmp_path / "relu.onnx")]) == 0  # an error finding: nothing to quantize
    assert main(["doctor", str(tmp_path / "relu.onnx"), "--strict"]) == 1
    capsys.readouterr()
    assert main(["doctor", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main(["doctor", str(tmp_path / "junk.onnx")]) == 2


@pytest.mark.parametrize("name", ["ch_PP-OCRv4_det_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"])
def test_real_ppocr_models(name):
    rapid = pytest.importorskip("rapidocr_onnxruntime", reason="real-model check needs the [ocr] extra")

    r = diagnose(Path(rapid.__file__).parent / "models" / name)
    codes = _codes(r)
    assert r.opset in (11, 12) and "constant-nodes" in codes and codes["weighted-layers"] == "info"
    if "det" in name:  # a BatchNormalization running variance of ~1e8 breaks a naive FP16 cast
        assert codes["fp16-range"] == "warn" and "bn-after-convtranspose" in codes
    else:
        assert "dim-values" in codes  # batch dim stored as -1


_CNN_SRC = """
import torch


def make():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
"""


@pytest.fixture()
def cnn_package(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from _helpers.user_project import make_package

    return make_package(tmp_path, monkeypatch, {"nets": _CNN_SRC})


def test_doctor_takes_the_model_references_export_takes(tmp_path, capsys, monkeypatch, cnn_package):
    """A factory with --input specs and a torch.save'd module are exported to a temporary ONNX file and diagnosed."""
    import tempfile

    import torch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    ref = f"{cnn_package}.nets:make"
    assert main(["doctor", ref, "--input", "x:float32:batchx3x16x16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"].startswith(ref) and data["inputs"][0]["name"] == "x"
    assert data["op_counts"]["Conv"] == 2 and "silu" in {f["code"] for f in data["findings"]}
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary export is gone
    import importlib

    torch.save(importlib.import_module(f"{cnn_package}.nets").make(), tmp_path / "m.pt")
    assert main(["doctor", str(tmp_path / "m.pt"), "--input-shape", "2,3,16,16"]) == 0
    assert f"{tmp_path / 'm.pt'} (exported to ONNX opset 17" in capsys.readouterr().out


def test_doctor_reference_errors_are_one_line(tmp_path, capsys, cnn_package):
    onnx.save(_conv_model(), tmp_path / "ok.onnx")
    cases = [[f"{cnn_package}.nets:make"],  # no input specs: nothing to export with
             [str(tmp_path / "ok.onnx"), "--input", "x:float32:batchx3x8x8"],  # ignored for an .onnx
             [f"{cnn_package}.nets:missing", "--input", "x:float32:batchx3x16x16"],
             [f"{cnn_package}.nets:make", "--input", "x:float32:batchx5x16x16"]]  # forward fails: 5 channels
    for argv in cases:
        assert main(["doctor", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("trtopt doctor: error: "), (argv, err)


def test_doctor_reports_placeholder_dims(tmp_path):
    from trtopt.doctor import diagnose

    found = {f.code: f for f in diagnose(qmark_model(tmp_path / "q.onnx")).findings}
    f = found["placeholder-dims"]
    assert f.severity == "info" and "renamed for TensorRT" in f.message and f.detail["dims"] == ["x[2]='?'",
                                                                                                "x[3]='?'"]


def test_a_qdq_model_gets_its_int8_share_of_macs_at_the_graph_opt_shapes(tmp_path):
    from _helpers.onnx_models import fragile_mlp
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    from trtopt.quant import QuantizeConfig, quantize_qdq

    path, x = fragile_mlp(tmp_path / "mlp.onnx", samples=16)
    table = calibrate(path, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    q = quantize_qdq(path, table, QuantizeConfig(fidelity_guard=False, exclude_nodes=("/mid/Gemm",))).model
    onnx.save(q, tmp_path / "q.onnx")
    f = next(f for f in diagnose(tmp_path / "q.onnx").findings if f.code == "int8-macs")
    int8, total = 16 * 32 + 32 * 10, 16 * 32 + 32 * 32 + 32 * 10  # batch 1 (the opt of a dynamic batch)
    assert (f.detail["int8_macs"], f.detail["total_macs"]) == (int8, total)
    assert f"INT8 MACs: {100 * int8 / total:.1f}%" in f.message and "largest in float: /mid/Gemm" in f.message
    assert not [f for f in diagnose(path).findings if f.code == "int8-macs"]
