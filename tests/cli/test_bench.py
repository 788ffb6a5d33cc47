"""``trtopt bench`` / ``trtopt report`` end to end on tiny ONNX models, and bad-input exit codes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.data_files import (
    FAST_ARGS,
    cnn_model,
)
from trtopt.benchmark.suite import describe_onnx
from trtopt.cli.main import main

RNG = np.random.default_rng(0)
W = RNG.normal(size=(8, 4)).astype(np.float32)
FAST = ["--warmup", "1", "--iterations", "5", "--no-plots"]


def _save(path, w, batch=None, qdq=False, qdq_weight=False):
    inits = [numpy_helper.from_array(w, "w")]
    nodes, src, wsrc = [], "input", "w"
    if qdq_weight:
        nodes += [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], name="wq"),
                  helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wdq"], name="wdq")]
        wsrc = "wdq"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq")]
        src = "dq"
    nodes.append(helper.make_node("MatMul", [src, wsrc], ["logits"], name="/fc/MatMul"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


@pytest.fixture
def models(tmp_path):
    x = RNG.normal(size=(20, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", input=x, labels=(x @ W).argmax(1))
    return (_save(tmp_path / "fp32.onnx", W), _save(tmp_path / "int8.onnx", W, qdq=True),
            str(tmp_path / "eval.npz"))


def test_bench_writes_report_with_sweep_accuracy_and_fidelity(models, tmp_path, capsys):
    fp32, int8, data = models
    out = tmp_path / "out"
    rc = main(["bench", fp32, int8, "--batch", "1,4", "--data", data, "--out", str(out), "--layerwise",
               "--min-sqnr", "200", *FAST])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    rows = {(v["name"], v["batch_size"]): v for v in rep["variants"]}
    assert set(rows) == {("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)}
    assert rows[("fp32", 1)]["accuracy"]["value"] == 100.0
    assert rows[("int8", 4)]["precision"] == "int8" and rows[("fp32", 4)]["precision"] == "fp32"
    assert rows[("int8", 4)]["timing"]["iterations"] == 5 and rows[("int8", 4)]["timing"]["mode"] == "cpu"
    assert rows[("int8", 4)]["fidelity"]["logits"]["sqnr_db"] != "inf"  # quantized input: not exact
    assert rows[("fp32", 1)]["vs_fp32"]["speedup"] == pytest.approx(1.0)
    assert rows[("int8", 4)]["fidelity_violations"]["logits"][0].startswith("sqnr_db ")
    assert rows[("fp32", 4)]["fidelity_violations"] == {}
    assert "sqnr_db " in (out / "report.md").read_text()
    assert (out / "report.md").is_file() and (out / "layerwise" / "int8.json").is_file()
    assert "layer-wise" in capsys.readouterr().out


def test_bench_reports_the_int8_share_of_macs_of_each_int8_graph(models, tmp_path, capsys):
    fp32, act_only, data = models
    both = _save(tmp_path / "int8w.onnx", W, qdq=True, qdq_weight=True)
    out = tmp_path / "out"
    assert main(["bench", fp32, act_only, both, "--data", data, "--out", str(out), *FAST]) == 0
    rows = {v["name"]: v for v in json.loads((out / "report.json").read_text())["variants"]}
    assert rows["fp32"]["int8_macs"] is None
    full, half = rows["int8w"]["int8_macs"], rows["int8"]["int8_macs"]
    assert full["total_macs"] == full["int8_macs"] == 8 * 4 and full["share"] == 1.0 and full["shapes"] == {
        "input": [1, 8]}
    # the weight stays float: the MatMul computes in float although its activation is quantized
    assert half["int8_macs"] == 0 and [t["node"] for t in half["top_float"]] == ["/fc/MatMul"]
    md = (out / "report.md").read_text()
    assert "| INT8 MACs |" in md and "| 100.0% |" in md and "| 0.0% |" in md


def test_bench_without_data_is_throughput_and_fidelity_only(models, tmp_path):
    fp32, int8, _ = models
    assert main(["bench", fp32, int8, "--out", str(tmp_path / "o"), "--num-samples", "5", *FAST]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert all(v["accuracy"]["value"] is None for v in rep["variants"])
    assert rep["variants"][1]["fidelity"]["logits"]["top1_agreement"] is not None


def test_report_command_shows_and_compares(models, tmp_path, capsys):
    fp32, _, data = models
    for d in ("a", "b"):
        assert main(["bench", fp32, "--data", data, "--out", str(tmp_path / d), *FAST]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a" / "report.json"), str(tmp_path / "b" / "report.json"),
                 "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| variant | backend | batch | A samples/s |" in out and "| fp32 | onnxruntime | 1 |" in out
    assert main(["report", str(tmp_path / "a" / "report.json")]) == 0


@pytest.mark.parametrize("extra,msg", [
    (["--batch", "4"], "fixed batch of 2"),
    (["--batch", "0"], "positive"),
    (["--backend", "tflite"], "unknown backend"),
    (["--metric", "bleu", "--batch", "2"], "unknown metric"),
])
def test_bench_bad_input_exits_2(tmp_path, capsys, extra, msg):
    model = _save(tmp_path / "fixed.onnx", W, batch=2)
    x = RNG.normal(size=(6, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", input=x, labels=np.zeros(6, np.int64))
    rc = main(["bench", model, "--data", str(tmp_path / "eval.npz"), "--out", str(tmp_path / "o"), *FAST, *extra])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert rc == 2 and len(errors) == 1 and msg in errors[0], err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_bench_bad_files_and_metric_that_does_not_apply(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "bad.npz").write_text("nope")
    model = _save(tmp_path / "m.onnx", W[:, :1])  # one output column: top-1 does not apply
    assert main(["bench", model, "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 2
    np.savez(tmp_path / "eval.npz", input=np.ones((3, 8), np.float32), labels=np.zeros(3, np.int64))
    assert main(["bench", model, "--data", str(tmp_path / "eval.npz"), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "does not apply" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", image=np.ones((3, 8), np.float32))
    assert main(["bench", model, "--data", str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert not (tmp_path / "o").exists()


def test_missing_backend_is_skipped_with_reason_or_exit_2(models, tmp_path):
    pytest.importorskip("onnxruntime")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    fp32, _, _ = models
    assert main(["bench", fp32, "--backend", "onnxruntime,tensorrt", "--out", str(tmp_path / "o"), *FAST]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    trt = [v for v in rep["variants"] if v["backend"] == "tensorrt"]
    assert trt and all(v["status"] == "skipped" and "tensorrt" in v["reason"].lower() for v in trt)
    assert main(["bench", fp32, "--backend", "tensorrt", "--out", str(tmp_path / "t"), *FAST]) == 2


def test_describe_onnx(models):
    fp32, int8, _ = models
    assert describe_onnx(fp32) == ("fp32", "dense")
    assert describe_onnx(int8)[0] == "int8"


def test_help_works():
    for cmd in ("bench", "gate", "report"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "-h"])
        assert e.value.code == 0


def test_bench_torch_backend_on_a_pt_file(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(8, 4)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(W.T.copy()))
        net.bias.zero_()
    torch.save(net, tmp_path / "net.pt")
    x = RNG.normal(size=(10, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", input=x, labels=(x @ W).argmax(1))
    rc = main(["bench", str(tmp_path / "net.pt"), "--backend", "torch", "--device", "cpu", "--precision", "bf16",
               "--data", str(tmp_path / "eval.npz"), "--batch", "2", "--out", str(tmp_path / "o"), *FAST])
    assert rc == 0
    v = json.loads((tmp_path / "o" / "report.json").read_text())["variants"][0]
    assert (v["name"], v["backend"], v["precision"], v["status"]) == ("net", "torch", "bf16", "ok")
    assert v["accuracy"]["value"] >= 80.0 and v["extra"]["runner"]["device"] == "cpu"
    assert main(["bench", str(tmp_path / "net.pt"), "--backend", "torch", "--out", str(tmp_path / "p"), *FAST]) == 2


def test_bench_batch_outside_the_declared_batch_range_is_refused_like_the_recipe(models, tmp_path, capsys):
    """One check for `bench --batch` and `[bench] batch_sizes`: a size the engine profile would not hold."""
    fp32, _, _ = models
    argv = ["bench", fp32, "--input", "input:float32:batch=1..8..32x8", "--out", str(tmp_path / "o"), *FAST]
    assert main([*argv, "--batch", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch [64] are outside the batch range 1..32 of input 'input'" in err[0], err
    assert not (tmp_path / "o").exists()
    assert main([*argv, "--batch", "32"]) == 0  # inside the range: runs


@pytest.mark.parametrize("extra,option", [
    (["--num-samples", "5"], "--num-samples"),
    (["--input", "input:float32:batchx8"], "--input"),
    (["--precision", "fp16"], "--precision"),
    (["--sparse24"], "--sparse24"),
    (["--top", "3"], "--top"),
])
def test_bench_options_this_combination_ignores_are_an_error(models, tmp_path, capsys, extra, option):
    fp32, _, data = models
    assert main(["bench", fp32, "--data", data, "--out", str(tmp_path / "o"), *extra, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trtopt bench: error: {option} "), err
    assert not (tmp_path / "o").exists()


def test_bench_report_is_titled_after_the_models_compared(models, tmp_path, capsys):
    fp32, int8, data = models
    assert main(["bench", fp32, int8, "--data", data, "--out", str(tmp_path / "o"), *FAST]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["workload"]["name"] == "fp32 vs int8"
    assert (tmp_path / "o" / "report.md").read_text().splitlines()[0] == "# trtopt benchmark: fp32 vs int8"
    assert "trtopt benchmark — fp32 vs int8" in capsys.readouterr().out


def test_bench_of_models_right_on_every_sample_writes_the_report_and_its_plots(models, tmp_path, capsys):
    fp32, int8, _ = models
    x = RNG.normal(size=(512, 8)).astype(np.float32)
    np.savez(tmp_path / "all.npz", input=x, labels=(x @ W).argmax(1))  # FP32's own answers: 512 of 512 right
    out = tmp_path / "out"
    assert main(["bench", fp32, int8, "--data", str(tmp_path / "all.npz"), "--out", str(out),
                 "--warmup", "1", "--iterations", "5"]) == 0
    rep = json.loads((out / "report.json").read_text())
    acc = rep["variants"][0]["accuracy"]
    assert acc["value"] == 100.0 and acc["ci95"][1] == 100.0 and acc["ci95"][0] < 100.0
    pytest.importorskip("matplotlib")
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG" and "](pareto.png)" in (out / "report.md").read_text()


#: the hint line, word for word
HINT = ("fidelity on random inputs can differ from real data: pass --data EVAL.npz, or --input "
        "NAME:DTYPE:SHAPE:LOW..HIGH with the value range of real inputs")


@pytest.mark.parametrize("where", ["file", "parent-file"])
def test_bench_out_is_a_file_fails_before_evaluation(files, capsys, where):
    blocker = files["dir"] / "taken"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    assert main(["bench", str(files["cnn"]), "--out", str(out), *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert "(evaluate)" not in err and "timing" not in err  # nothing ran
    assert str(blocker) in err and err.count("error:") == 1
    assert blocker.read_text() == "x"


def test_unknown_regression_output_with_one_model(files, capsys):
    assert main(["bench", str(files["cnn"]), "--out", str(files["dir"] / "o"), "--regression-output", "boxes",
                 *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert "['boxes'] are not outputs of the model (outputs: ['logits'])" in err
    assert "(evaluate)" not in err and not (files["dir"] / "o" / "report.json").exists()


@pytest.mark.parametrize("case, hint", [("same", False), ("negated", True), ("negated-with-data", False)])
def test_random_inputs_fidelity_hint(files, capsys, case, hint):
    # "negated" flips the sign of the head: its logits are exactly -FP32's (cosine -1), a failure on any input
    other = cnn_model(files["dir"] / "other.onnx", sign=1.0 if case == "same" else -1.0)
    out = files["dir"] / "rep"
    data = ["--data", str(files["good"])] if case.endswith("with-data") else []
    assert main(["bench", str(files["cnn"]), str(other), "--out", str(out), *data, *FAST_ARGS]) == 0
    err = capsys.readouterr().err
    assert err.count(HINT) == (1 if hint else 0), err
    rep = json.loads((out / "report.json").read_text())
    fails = [v for v in rep["variants"] if v["name"] == "other" and v["fidelity_ok"] is False]
    assert bool(fails) == (case != "same")
    md = (out / "report.md").read_text()
    if data:
        assert rep["workload"]["data"] == str(files["good"]) and "Random inputs" not in md
    else:
        assert rep["workload"]["data"].startswith("random inputs") and "Random inputs" in md


def test_random_inputs_hint_rule():
    from trtopt.cli.cmd_bench import RANDOM_INPUTS_HINT, random_inputs_hint

    assert RANDOM_INPUTS_HINT == HINT
    from trtopt.benchmark import AccuracyResult, Report, VariantResult

    def report(data, *variants):
        return Report(environment={}, workload={"data": data}, variants=list(variants))

    def row(status, acc=None):
        return VariantResult("v", "onnxruntime", "int8", status=status, accuracy=acc,
                             reason="" if status == "ok" else "not installed")

    bad = row("ok", AccuracyResult(metric="none", value=None, violations={"y": ["cosine 0.9 < 0.99"]}))
    assert random_inputs_hint(report("random inputs", bad)) == RANDOM_INPUTS_HINT
    assert random_inputs_hint(report("given", bad)) is None
    assert random_inputs_hint(report("eval.npz", bad)) is None
    ok = row("ok", AccuracyResult(metric="none", value=None))
    assert random_inputs_hint(report("random inputs", ok, row("skipped"))) is None
