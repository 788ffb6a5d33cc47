"""A new user's data trial (issue 13, second pass): errors name the file and its shape, outputs are checked
up front, regression-output names are checked for one model, the random-input hint, NaN labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trtopt.benchmark import BenchConfig  # noqa: E402
from trtopt.cli.main import main  # noqa: E402
from trtopt.dataset import Dataset, load_npz  # noqa: E402
from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.fileio import check_writable  # noqa: E402
from trtopt.inputs import parse_input_specs  # noqa: E402

#: the hint line the brief asks for, word for word
HINT = ("fidelity on random inputs can differ from real data: pass --data EVAL.npz, or --input "
        "NAME:DTYPE:SHAPE:LOW..HIGH with the value range of real inputs")
FAST = ["--batch", "1", "--min-duration", "0.02", "--rounds", "5", "--warmup", "1", "--no-plots"]


def _cnn(path: Path, sign: float = 1.0, batch: str | int = "N") -> Path:
    """img [N, 1, 8, 8] -> Conv 3x3 -> Relu -> Flatten -> MatMul -> logits [N, 5]; ``sign`` scales the head."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "B")
    g = numpy_helper.from_array(sign * 0.1 * rng.standard_normal((256, 5)).astype(np.float32), "G")
    nodes = [helper.make_node("Conv", ["img", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "G"], ["logits"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [batch, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])], [w, b, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _tokens(path: Path) -> Path:
    """ids int64 [batch, seq] (seq dynamic) -> Gather on a [50, 8] table -> MatMul [8, 4] -> ReduceMean(seq)."""
    rng = np.random.default_rng(1)
    emb = numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "E")
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["h"]),
             helper.make_node("ReduceMean", ["h"], ["out"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "tok", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])], [emb, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cnn_wrongshape.npz", img=rng.random((341, 1, 6, 8)).astype(np.float32))
    np.savez(tmp_path / "good.npz", img=rng.random((40, 1, 8, 8)).astype(np.float32),
             labels=rng.integers(0, 5, 40))
    return {"cnn": _cnn(tmp_path / "cnn.onnx"), "wrong": tmp_path / "cnn_wrongshape.npz",
            "good": tmp_path / "good.npz", "dir": tmp_path}


def _table(files) -> Path:
    out = files["dir"] / "calib"
    assert main(["calibrate", str(files["cnn"]), "--data", str(files["good"]), "--out", str(out)]) == 0
    return out / "cnn.calib.json"


# -- 1. data errors name the file and the file's shape, checked before the first batch --------------------
@pytest.mark.parametrize("cmd", ["calibrate", "quantize-calib-data", "quantize-eval", "bench"])
def test_wrong_shape_names_file_and_its_shape(files, capsys, cmd):
    m, wrong, out = str(files["cnn"]), str(files["wrong"]), files["dir"] / "out"
    argv = {"calibrate": ["calibrate", m, "--data", wrong, "--out", str(out)],
            "bench": ["bench", m, "--data", wrong, "--out", str(out), *FAST]}.get(cmd)
    if argv is None:
        table = str(_table(files))
        capsys.readouterr()
        extra = ["--calib-data", wrong] if cmd == "quantize-calib-data" else ["--eval", wrong,
                                                                              "--max-accuracy-drop", "1"]
        argv = ["quantize", m, "--calib", table, *extra, "--out", str(out / "q.onnx")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    # the file by name, the file's own shape (341 samples), never a batch's (32 / 1 samples)
    assert "cnn_wrongshape.npz: 'img' has size 6 on axis 2; the model fixes it to 8" in lines[0]
    assert "[341, 1, 6, 8]" in lines[0] and "(32," not in err and "(1, 1, 6, 8)" not in err
    assert "(evaluate)" not in err  # bench: checked before the first model ran
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_graph_dims_without_a_size_accept_any_size(tmp_path):
    """specs_from_onnx gives a dynamic non-batch dim 1..1..1: checking data against a graph must not enforce it."""
    model = onnx.load(str(_tokens(tmp_path / "tok.onnx")))
    for seq in (5, 20):
        ds = Dataset({"ids": np.ones((3, seq), np.int64)}, source="t.npz").check_onnx(model)
        assert ds.inputs["ids"].shape == (3, seq)
    # declared ranges (recipes, --input) are still enforced by Dataset.check
    with pytest.raises(InputError, match=r"t.npz: 'ids' has size 5 on axis 1, outside the declared range 16..128"):
        Dataset({"ids": np.ones((3, 5), np.int64)}, source="t.npz").check(
            parse_input_specs(["ids:int64:batchxseq=16..128"]))
    # dtype and rank are still checked against the graph, naming the file and its shape
    with pytest.raises(InputError, match=r"t.npz: 'ids' is int32; the model input is int64"):
        Dataset({"ids": np.ones((3, 5), np.int32)}, source="t.npz").check_onnx(model)
    with pytest.raises(InputError, match=r"t.npz: 'ids' has shape \[3, 5, 1\] \(rank 3\); the model input is "
                                         r"batchxseq \(rank 2\)"):
        Dataset({"ids": np.ones((3, 5, 1), np.int64)}, source="t.npz").check_onnx(model)


def test_calibrate_token_model_with_dynamic_seq(tmp_path, capsys):
    np.savez(tmp_path / "ids.npz", ids=np.random.default_rng(0).integers(0, 50, (24, 20)).astype(np.int64))
    assert main(["calibrate", str(_tokens(tmp_path / "tok.onnx")), "--data", str(tmp_path / "ids.npz"),
                 "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "tok.calib.json").is_file()


def test_fixed_batch_model_takes_a_file_of_samples(tmp_path):
    """A graph with a fixed batch of 1 still reads samples on axis 0 (calibration cuts calls to the fixed size)."""
    model = onnx.load(str(_cnn(tmp_path / "b1.onnx", batch=1)))
    ds = Dataset({"img": np.zeros((16, 1, 8, 8), np.float64)}, source="f.npz").check_onnx(model)
    assert ds.inputs["img"].dtype == np.float32  # float data cast to the model's float type


# -- 2. output folder checked up front; check_writable names the requested path -----------------------------
@pytest.mark.parametrize("where", ["file", "parent-file"])
def test_bench_out_is_a_file_fails_before_evaluation(files, capsys, where):
    blocker = files["dir"] / "taken"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    assert main(["bench", str(files["cnn"]), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "(evaluate)" not in err and "timing" not in err  # nothing ran
    assert str(blocker) in err and err.count("error:") == 1
    assert blocker.read_text() == "x"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("folder", [False, True])
def test_check_writable_names_the_requested_path_and_the_refusing_folder(folder):
    with pytest.raises(InputError) as exc:
        check_writable("/proc/nope/x.onnx", folder=folder)
    msg = str(exc.value)
    assert msg.startswith("cannot write /proc/nope/x.onnx: /proc does not accept new files (")


# -- 3. --regression-output names checked whatever the number of models --------------------------------
def test_unknown_regression_output_with_one_model(files, capsys):
    assert main(["bench", str(files["cnn"]), "--out", str(files["dir"] / "o"), "--regression-output", "boxes",
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "['boxes'] are not outputs of the model (outputs: ['logits'])" in err
    assert "(evaluate)" not in err and not (files["dir"] / "o" / "report.json").exists()


def test_unknown_tolerance_name_library_call(files):
    from trtopt.benchmark.suite import bench_models

    cfg = BenchConfig(batch_sizes=(1,), min_duration_s=0.02, rounds=5, warmup=1, regression_outputs=("boxes",))
    with pytest.raises(ConfigError, match="boxes"):
        bench_models([str(files["cnn"])], ["onnxruntime"], cfg, num_samples=4)


# -- 4. random inputs: the hint when fidelity fails, and the report says so ---------------------------------
@pytest.mark.parametrize("case, hint", [("same", False), ("negated", True), ("negated-with-data", False)])
def test_random_inputs_fidelity_hint(files, capsys, case, hint):
    # "negated" flips the sign of the head: its logits are exactly -FP32's (cosine -1), a failure on any input
    other = _cnn(files["dir"] / "other.onnx", sign=1.0 if case == "same" else -1.0)
    out = files["dir"] / "rep"
    data = ["--data", str(files["good"])] if case.endswith("with-data") else []
    assert main(["bench", str(files["cnn"]), str(other), "--out", str(out), *data, *FAST]) == 0
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


# -- 5. non-finite labels ---------------------------------------------------------------------------------
def test_nan_labels_rejected_naming_the_file(tmp_path, capsys):
    x = np.zeros((4, 1, 8, 8), np.float32)
    np.savez(tmp_path / "nanlab.npz", img=x, labels=np.array([np.nan, 1.0, 2.0, np.inf]))
    with pytest.raises(InputError, match=r"^nanlab.npz: 'labels' holds 2 NaN/Inf value\(s\) of 4"):
        load_npz(tmp_path / "nanlab.npz")
    with pytest.raises(InputError, match="mem: 'labels' holds 1 NaN/Inf"):
        Dataset({"img": x}, labels=np.array([0.0, 1.0, np.nan, 2.0]), source="mem")
    ok = Dataset({"img": x}, labels=np.array([0.0, 1.0, 3.0, 2.0]), source="mem")  # finite floats are fine
    assert ok.labels is not None
    cnn = _cnn(tmp_path / "cnn.onnx")
    assert main(["bench", str(cnn), "--data", str(tmp_path / "nanlab.npz"), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "nanlab.npz: 'labels' holds 2 NaN/Inf" in err and "(evaluate)" not in err
