"""Accuracy budget and the ``calibrate`` / ``quantize`` command lines (exit codes, outputs)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.calib import CalibrationConfig, CalibrationTable, NumpySource, calibrate
from trtopt.cli.main import main
from trtopt.onnx.graph import module_name, producers
from trtopt.quant import apply_accuracy_budget


def _mlp(tmp_path):
    """x[N,16] -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> y[N,10], node names like a torch export.

    The middle layer gets a few huge weights so per-channel INT8 of *its input* is harmless but
    one output channel dominates: the layer is clearly the most sensitive one.
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 16)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((32, 32)).astype(np.float32) * 0.2
    w3 = rng.standard_normal((10, 32)).astype(np.float32) * 0.3
    n = helper.make_node
    nodes = [
        n("Gemm", ["input", "w1"], ["h1"], name="/features/0/Gemm", transB=1),
        n("Relu", ["h1"], ["r1"], name="/features/1/Relu"),
        n("Gemm", ["r1", "w2"], ["h2"], name="/features/2/Gemm", transB=1),
        n("Relu", ["h2"], ["r2"], name="/features/3/Relu"),
        n("Gemm", ["r2", "w3"], ["logits"], name="/classifier/Gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(w, k) for k, w in (("w1", w1), ("w2", w2), ("w3", w3))])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def files(tmp_path):
    path = _mlp(tmp_path)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((128, 16)).astype(np.float32)
    x[:, 0] *= 30  # a heavy input channel: per-tensor INT8 of the input hurts the first layer most
    np.savez(tmp_path / "calib.npz", input=x[:64])
    np.savez(tmp_path / "eval.npz", input=x[64:])
    return path, x


def test_module_names_from_node_names():
    assert module_name("/features/0/Conv") == "features.0"
    assert module_name("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_name("/features/features.3/Conv") == "features.3"
    assert module_name("Conv_12") is None


def test_budget_keeps_worst_layers_until_within_budget(files):
    path, x = files
    table = calibrate(path, NumpySource({"input": x[:64]}), CalibrationConfig(method="minmax"))
    tight = apply_accuracy_budget(path, table, {"input": x[64:]}, None, max_drop=0.001)
    assert tight.int8_all < tight.fp32 - 0.001  # all-INT8 misses the tight budget
    assert tight.within_budget and tight.kept_nodes
    assert tight.kept_nodes[0] == max(tight.sensitivity, key=tight.sensitivity.get)
    assert tight.kept_modules[0] == module_name(tight.kept_nodes[0])
    prod = producers(tight.model.graph)
    for node in tight.model.graph.node:
        quantized = prod.get(node.input[0]) is not None and prod[node.input[0]].op_type == "DequantizeLinear"
        if node.op_type == "Gemm":
            assert quantized == (node.name not in tight.kept_nodes)
    loose = apply_accuracy_budget(path, table, {"input": x[64:]}, None, max_drop=50.0)
    assert loose.kept_nodes == [] and loose.sensitivity == {}


def test_cli_calibrate_writes_table_and_cache(files, tmp_path, capsys):
    path, _ = files
    rc = main(["calibrate", str(path), "--data", str(tmp_path / "calib.npz"), "--method", "percentile",
               "--out", str(tmp_path / "cal")])
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "cal" / "mlp.calib.json"), str(tmp_path / "cal" / "mlp.calib.cache")]
    table = CalibrationTable.load_json(printed[0])
    assert table.method == "percentile" and set(table.amax) == {"input", "r1", "r2"}
    assert (tmp_path / "cal" / "mlp.calib.cache").read_text().startswith("TRT-100300-EntropyCalibration2\n")


def test_cli_quantize_modes_and_budget(files, tmp_path, capsys):
    path, _ = files
    assert main(["calibrate", str(path), "--data", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "c")]) == 0
    tj, tc = tmp_path / "c" / "mlp.calib.json", tmp_path / "c" / "mlp.calib.cache"
    # the guard finds the table's calibration data and refuses an INT8 model that flips top-1 answers
    assert main(["quantize", str(path), "--calib", str(tj), "--out", str(tmp_path / "q.onnx"),
                 "--exclude", "/classifier/*"]) == 2
    assert "INT8 breaks this model" in capsys.readouterr().err and not (tmp_path / "q.onnx").exists()
    assert main(["quantize", str(path), "--calib", str(tj), "--out", str(tmp_path / "q.onnx"),
                 "--exclude", "/classifier/*", "--no-fidelity-guard"]) == 0
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) == 4  # 2 layers x (activation + weight)
    assert main(["quantize", str(path), "--calib", str(tc), "--fp16-rest", "--out", str(tmp_path / "qf.onnx")]) == 0
    assert main(["quantize", str(path), "--fp16", "--out", str(tmp_path / "f.onnx")]) == 0
    f = onnx.load(str(tmp_path / "f.onnx"))
    assert f.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    rc = main(["quantize", str(path), "--calib", str(tj), "--max-accuracy-drop", "0.001", "--eval",
               str(tmp_path / "eval.npz"), "--out", str(tmp_path / "b.onnx"), "--report", str(tmp_path / "b.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "b.json").read_text())
    assert rep["within_budget"] and rep["kept_nodes"] and rep["metric"] == "cosine"
    assert (tmp_path / "b.onnx").is_file()


@pytest.mark.parametrize("argv_tail, message", [
    (["--out", "o.onnx"], "give --calib"),
    (["--calib", "missing.json", "--out", "o.onnx"], "not found"),
    (["--fp16", "--fp16-rest", "--out", "o.onnx"], "--fp16 converts to FP16 only"),
    (["--calib", "CACHE", "--out", "o.onnx"], "damaged calibration cache"),
    (["--calib", "FOREIGN", "--out", "o.onnx"], "does not belong"),
    (["--calib", "TABLE", "--max-accuracy-drop", "1", "--out", "o.onnx"], "needs --eval"),
])
def test_cli_user_errors_exit_2(files, tmp_path, capsys, monkeypatch, argv_tail, message):
    path, _ = files
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.cache").write_text("TRT-100300-EntropyCalibration2\ninput: zz\n")
    CalibrationTable({"other/t": 1.0}).write_trt_cache(tmp_path / "foreign.cache")
    CalibrationTable({"input": 1.0}).save_json(tmp_path / "t.json")
    subst = {"CACHE": "bad.cache", "FOREIGN": "foreign.cache", "TABLE": "t.json"}
    rc = main(["quantize", str(path), *[subst.get(a, a) for a in argv_tail]])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_cli_calibrate_nan_data_and_wrong_name(files, tmp_path, capsys):
    path, x = files
    bad = x[:8].copy()
    bad[0, 3] = np.inf
    np.savez(tmp_path / "nan.npz", input=bad)
    np.savez(tmp_path / "wrong.npz", image=x[:8])
    assert main(["calibrate", str(path), "--data", str(tmp_path / "nan.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "input 'input' contains 1 NaN/Inf" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--data", str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "do not match" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv_tail, option", [
    (["--fp16", "--per-tensor-weights"], "--per-tensor-weights"),
    (["--fp16", "--exclude-op-type", "Gemm"], "--exclude-op-type"),
    (["--fp16", "--no-fidelity-guard"], "--no-fidelity-guard"),
    (["--fp16", "--regression-output", "logits"], "--regression-output"),
    (["--calib", "TABLE", "--report", "r.json"], "--report"),
    (["--calib", "TABLE", "--max-accuracy-drop", "1", "--eval", "eval.npz", "--calib-data", "calib.npz"],
     "--calib-data"),
    (["--calib", "TABLE", "--max-accuracy-drop", "1", "--eval", "eval.npz", "--no-fidelity-guard"],
     "--no-fidelity-guard"),
])
def test_cli_quantize_options_the_mode_ignores_are_an_error(files, tmp_path, capsys, monkeypatch, argv_tail, option):
    path, _ = files
    monkeypatch.chdir(tmp_path)
    CalibrationTable({"input": 1.0}).save_json(tmp_path / "t.json")
    rc = main(["quantize", str(path), *[{"TABLE": "t.json"}.get(a, a) for a in argv_tail], "--out", "o.onnx"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"trtopt quantize: error: {option} "), err
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "r.json").exists()
