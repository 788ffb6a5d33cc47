"""One batching rule: every stage runs a fixed-batch model one call of its size at a time; ORT errors are one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.batching import batch_rule
from trtopt.cli.main import main
from trtopt.errors import InputError

H, W, C, HID, K = 8, 12, 4, 8, 5


def _recognizer(path, batch: int | str = 1, reshape_batch: int | None = None):
    """A CNN+LSTM line recognizer ``input1[batch, 1, 8, 12] -> logits[batch, 12, 5]`` (a captcha reader's shape).

    Conv -> Relu -> Reshape to ``[batch, C*H, W]`` -> Transpose to ``[W, batch, C*H]`` -> LSTM -> per-column
    classifier. As a fixed-batch export does, the Reshape holds the batch size as a constant
    (``reshape_batch``, default ``batch``): such a graph runs on no other batch size.
    """
    rng = np.random.default_rng(0)
    rb = reshape_batch if reshape_batch is not None else batch
    inits = {"conv_w": rng.standard_normal((C, 1, 3, 3)) * 0.4, "conv_b": rng.standard_normal(C) * 0.1,
             "shape": np.array([rb, C * H, W], np.int64),
             "lstm_w": rng.standard_normal((1, 4 * HID, C * H)) * 0.2,
             "lstm_r": rng.standard_normal((1, 4 * HID, HID)) * 0.2,
             "fc_w": rng.standard_normal((HID, K)) * 0.5, "axes": np.array([1], np.int64)}
    n = helper.make_node
    nodes = [n("Conv", ["input1", "conv_w", "conv_b"], ["c"], name="/cnn/conv/Conv", pads=[1, 1, 1, 1]),
             n("Relu", ["c"], ["r"], name="/cnn/relu/Relu"),
             n("Reshape", ["r", "shape"], ["seq"], name="/Reshape"),
             n("Transpose", ["seq"], ["tnc"], name="/Transpose", perm=[2, 0, 1]),
             n("LSTM", ["tnc", "lstm_w", "lstm_r"], ["y"], name="/rnn/LSTM", hidden_size=HID),
             n("Squeeze", ["y", "axes"], ["ys"], name="/rnn/Squeeze"),
             n("Transpose", ["ys"], ["ntc"], name="/Transpose_1", perm=[1, 0, 2]),
             n("MatMul", ["ntc", "fc_w"], ["logits"], name="/fc/MatMul")]
    g = helper.make_graph(nodes, "recognizer",
                          [helper.make_tensor_value_info("input1", TensorProto.FLOAT, [batch, 1, H, W])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, W, K])],
                          [numpy_helper.from_array(np.asarray(v, np.int64 if v.dtype == np.int64 else np.float32), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


@pytest.fixture
def fixed(tmp_path):
    """The batch-1 recognizer, 40 calibration and 20 evaluation lines, calibrated by `trtopt calibrate`."""
    path = _recognizer(tmp_path / "rec.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", input1=rng.standard_normal((40, 1, H, W)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", input1=rng.standard_normal((20, 1, H, W)).astype(np.float32))
    assert main(["calibrate", str(path), "--data", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "c")]) == 0
    return path, tmp_path / "c" / "rec.calib.json"


def _loads(path):
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # as bench opens it (optimized)


def test_the_fidelity_guard_runs_a_fixed_batch_model_on_all_its_calibration_samples(fixed, capsys):
    path, table = fixed
    out = path.parent / "rec.int8.onnx"
    assert main(["quantize", str(path), "--calib", str(table), "--out", str(out)]) == 0
    assert "fidelity guard:" in capsys.readouterr().err
    _loads(out)
    from trtopt.calib import CalibrationTable
    from trtopt.quant.guard import guard_fidelity

    x = np.load(path.parent / "calib.npz")["input1"]
    res = guard_fidelity(path, CalibrationTable.load_json(table), {"input1": x}, batch_size=16)
    assert res.samples == 40 and res.fidelity[0]["cosine"] > 0.99  # every sample judged, calls of 1


def test_the_accuracy_budget_runs_a_fixed_batch_model(fixed, capsys):
    path, table = fixed
    out, report = path.parent / "rec.budget.onnx", path.parent / "budget.json"
    assert main(["quantize", str(path), "--calib", str(table), "--max-accuracy-drop", "0.5",
                 "--eval", str(path.parent / "eval.npz"), "--report", str(report), "--out", str(out)]) == 0
    import json

    assert json.loads(report.read_text())["fp32"] == pytest.approx(100.0)  # cosine of FP32 to itself, 20 lines
    _loads(out)


def test_the_fp16_overflow_preview_runs_a_fixed_batch_model(fixed, capsys):
    path, _ = fixed
    out = path.parent / "rec.fp16.onnx"
    assert main(["quantize", str(path), "--fp16", "--calib-data", str(path.parent / "calib.npz"),
                 "--out", str(out)]) == 0
    assert "overflow on real data not checked" not in capsys.readouterr().err
    onnx.checker.check_model(str(out), full_check=True)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["trtopt.fp16.overflow_preview"] == "1 samples, no overflow"  # one call of the fixed size


def test_bench_accuracy_and_layerwise_run_a_fixed_batch_model_at_its_batch_size(fixed, capsys):
    import json

    path, table = fixed
    int8 = path.parent / "rec.int8.onnx"
    assert main(["quantize", str(path), "--calib", str(table), "--no-fidelity-guard", "--out", str(int8)]) == 0
    out = path.parent / "b"
    assert main(["bench", str(path), str(int8), "--data", str(path.parent / "eval.npz"), "--layerwise",
                 "--out", str(out), "--rounds", "5", "--min-duration", "0.05", "--warmup", "1"]) == 0
    rep = json.loads((out / "report.json").read_text())
    fid = rep["variants"][1]["fidelity"]["logits"]
    assert 0.9 < fid["cosine"] <= 1.0
    layers = json.loads((out / "layerwise" / "rec.int8.json").read_text())
    assert layers["samples"] == 20 and any(e["node"] == "/rnn/LSTM" for e in layers["layers"])


def test_calibration_cuts_any_source_batch_to_the_fixed_size_and_uses_every_sample(tmp_path):
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate

    path = _recognizer(tmp_path / "rec3.onnx", batch=3)
    x = np.random.default_rng(2).standard_normal((20, 1, H, W)).astype(np.float32)
    a = calibrate(path, NumpySource({"input1": x}, batch_size=7), CalibrationConfig(method="minmax"))
    b = calibrate(path, NumpySource({"input1": x}, batch_size=9), CalibrationConfig(method="minmax"))
    assert a.num_samples == b.num_samples == 20
    assert a.amax["input1"] == pytest.approx(float(np.abs(x).max()))
    assert a.amax == pytest.approx(b.amax)  # the calls do not depend on how the source batches the samples


def test_an_onnx_runtime_failure_is_one_line_naming_the_node_and_the_fix(tmp_path, capsys):
    """A graph that declares a dynamic batch but reshapes to a constant batch of 1 fails inside ONNX Runtime."""
    path = _recognizer(tmp_path / "hidden.onnx", batch="N", reshape_batch=1)
    x = np.random.default_rng(3).standard_normal((24, 1, H, W)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input1=x)
    table = tmp_path / "c" / "hidden.calib.json"
    from trtopt.calib import CalibrationConfig, NumpySource, calibrate

    calibrate(path, NumpySource({"input1": x}, batch_size=1), CalibrationConfig(method="minmax")).save_json(table)
    assert main(["quantize", str(path), "--calib", str(table), "--calib-data", str(tmp_path / "calib.npz"),
                 "--out", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "node '/Reshape' (Reshape) failed on inputs input1 [" in err[0] and "export it" in err[0]
    assert "reshape_helper.h" not in err[0]  # ONNX Runtime's source location is not the user's business
    assert not (tmp_path / "q.onnx").exists()


def test_a_refused_input_is_named_with_its_shape_and_the_fix(tmp_path):
    import onnxruntime as ort

    from trtopt.onnx.exec import run_session

    sess = ort.InferenceSession(str(_recognizer(tmp_path / "r.onnx")), providers=["CPUExecutionProvider"])
    cases = [({"input1": np.zeros((2, 1, H, W), np.float32)}, ["'input1' [2, 1, 8, 12]", "fixed size 1",
                                                               "static:input1"]),
             ({"input1": np.zeros((1, 1, H, W + 1), np.float32)}, ["axis 3", "expects 12"]),
             ({"input1": np.zeros((1, H, W), np.float32)}, ["rank 3", "expects rank 4"]),
             ({"input1": np.zeros((1, 1, H, W), np.float64)}, ["'input1' has dtype double", "expects float"]),
             ({"image": np.zeros((1, 1, H, W), np.float32)}, ["lacks input(s) ['input1']"])]
    for feed, words in cases:
        with pytest.raises(InputError) as info:
            run_session(sess, None, feed, "the model")
        msg = str(info.value)
        assert "\n" not in msg and all(w in msg for w in words), msg


def test_the_rule_pads_a_fixed_batch_and_broadcasts_or_cuts_static_inputs():
    rule = batch_rule({"x": (2, 3), "h": (1, "N", 4)}, static=["h"], static_axes={"h": (1,)})
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    calls = list(rule.calls({"x": x, "h": np.ones((1, 1, 4))}, wanted=64))
    assert [real for _, real in calls] == [2, 2, 1] and all(len(f["x"]) == 2 for f, _ in calls)
    assert all(f["h"].shape == (1, 2, 4) for f, _ in calls)  # size 1 on the batch axis: broadcast per call
    per_sample = np.arange(20, dtype=np.float32).reshape(1, 5, 4)
    got = rule.run(lambda f: {"y": f["x"].sum(1), "hs": f["h"][0, :, 0]}, {"x": x, "h": per_sample}, 2)
    assert np.array_equal(got["y"], x.sum(1))  # padding trimmed
    assert np.array_equal(got["hs"], per_sample[0, :, 0])  # one entry per sample: cut with the samples
    dynamic = batch_rule({"x": ("N", 3)})
    assert [r for _, r in dynamic.calls({"x": x}, wanted=0)] == [5] and dynamic.call_size(2, 5) == 2
    with pytest.raises(InputError, match="different fixed first dims"):
        batch_rule({"a": (1, 3), "b": (2, 3)})
