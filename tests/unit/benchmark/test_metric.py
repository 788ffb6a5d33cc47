"""A task metric given as ``package.module:function`` in bench, report and gate;
random feeds that respect the graph's input specs (token ids below the embedding rows, ``--input``)."""

from __future__ import annotations

import copy
import itertools
import json
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.benchmark import BenchConfig
from trtopt.benchmark.gate import Budget, gate
from trtopt.benchmark.suite import bench_specs, random_feeds
from trtopt.cli.main import main
from trtopt.errors import ConfigError
from trtopt.inputs import parse_input_specs

RNG = np.random.default_rng(3)
W = RNG.normal(size=(8, 6)).astype(np.float32)
FAST = ["--warmup", "1", "--iterations", "5", "--no-plots", "--rounds", "5"]
_count = itertools.count()


def _classifier(path):
    g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"], name="/fc/MatMul")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])],
                          [numpy_helper.from_array(W, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def _embedding(path, seq=8, rows=50):
    """ids [N, seq] int64 -> Gather on a [rows, 4] table -> mean over seq -> [N, 4]."""
    table = RNG.normal(size=(rows, 4)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0, name="/emb/Gather"),
         helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0, name="/pool")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(table, "table")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return str(path)


@pytest.fixture
def metric_pkg(tmp_path, monkeypatch):
    """A user package with metrics; a fresh module name per test (imports are cached)."""
    name = f"usermetrics{next(_count)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import numpy as np

        def match_rate(outputs, labels):
            return float(np.mean(outputs["logits"].argmax(1) == labels))

        def error_rate(outputs, labels):
            return float(np.mean(outputs["logits"].argmax(1) != labels))
        error_rate.higher_is_better = False

        def broken(outputs, labels):
            return outputs["no_such_output"]

        def not_a_number(outputs, labels):
            return "high"

        def scribble(outputs, labels):
            outputs["logits"][...] = 0.0  # would change what the judge compares next
            return 1.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture
def data(tmp_path):
    x = RNG.normal(size=(24, 8)).astype(np.float32)
    y = RNG.integers(0, 6, size=24).astype(np.int64)
    np.savez(tmp_path / "eval.npz", input=x, labels=y)
    return tmp_path / "eval.npz", x, y


def _bench(tmp_path, model, out, *extra):
    return main(["bench", model, "--out", str(out), *FAST, *extra])


def test_metric_by_reference_is_in_the_report_and_json(tmp_path, data, metric_pkg, capsys):
    npz, x, y = data
    model = _classifier(tmp_path / "m.onnx")
    rc = _bench(tmp_path, model, tmp_path / "o", "--data", str(npz), "--metric", f"{metric_pkg}:match_rate")
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    acc = rep["variants"][0]["accuracy"]
    want = float(np.mean((x @ W).argmax(1) == y))  # the metric's contract, computed with numpy
    assert acc["metric"] == "match_rate" and acc["ref"] == f"{metric_pkg}:match_rate"
    assert acc["value"] == pytest.approx(want, abs=1e-9)
    assert acc["metrics"]["top1"] == pytest.approx(100 * want)  # the built-in next to it
    assert "match_rate" in (tmp_path / "o" / "report.md").read_text()


def test_gate_judges_a_metric_by_reference_in_its_own_units(tmp_path, data, metric_pkg):
    npz, _, _ = data
    model = _classifier(tmp_path / "m.onnx")
    assert _bench(tmp_path, model, tmp_path / "o", "--data", str(npz), "--metric", f"{metric_pkg}:match_rate") == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    base = copy.deepcopy(rep)
    base["variants"][0]["accuracy"]["value"] += 0.2  # baseline scored 0.2 higher: a drop of 0.2 metric units
    (tmp_path / "base.json").write_text(json.dumps(base))
    argv = ["gate", str(tmp_path / "o" / "report.json"), "--baseline", str(tmp_path / "base.json"),
            "--max-throughput-drop", "99%"]
    assert main([*argv, "--max-accuracy-drop", "0.1"]) == 1
    assert main([*argv, "--max-accuracy-drop", "0.3"]) == 0
    res = gate(rep, base, Budget(max_accuracy_drop=0.1, max_throughput_drop=99))
    assert any("metric match_rate" in p for p in res.rows[0].problems)


def test_gate_judges_a_rise_of_a_lower_is_better_metric(tmp_path, data, metric_pkg):
    npz, _, _ = data
    model = _classifier(tmp_path / "m.onnx")
    assert _bench(tmp_path, model, tmp_path / "o", "--data", str(npz), "--metric", f"{metric_pkg}:error_rate") == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["variants"][0]["accuracy"]["higher_is_better"] is False
    better, worse = copy.deepcopy(rep), copy.deepcopy(rep)
    better["variants"][0]["accuracy"]["value"] -= 0.2  # the baseline had fewer errors: this run regressed
    worse["variants"][0]["accuracy"]["value"] += 0.2  # the baseline had more errors: this run improved
    budget = Budget(max_accuracy_drop=0.1, max_throughput_drop=99)
    assert not gate(rep, better, budget).passed
    assert gate(rep, worse, budget).passed


@pytest.mark.parametrize("fn,words", [("broken", "KeyError"), ("not_a_number", "not a number")])
def test_metric_failing_is_one_line_exit_2_and_no_report(tmp_path, data, metric_pkg, capsys, fn, words):
    npz, _, _ = data
    model = _classifier(tmp_path / "m.onnx")
    rc = _bench(tmp_path, model, tmp_path / "o", "--data", str(npz), "--metric", f"{metric_pkg}:{fn}")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"metric '{metric_pkg}:{fn}'" in lines[0] and words in lines[0]
    assert not (tmp_path / "o" / "report.json").exists() and not (tmp_path / "o" / "report.md").exists()


def test_metric_without_labels_says_so(tmp_path, metric_pkg, capsys):
    model = _classifier(tmp_path / "m.onnx")
    np.savez(tmp_path / "nolabels.npz", input=np.zeros((4, 8), np.float32))
    rc = _bench(tmp_path, model, tmp_path / "o", "--data", str(tmp_path / "nolabels.npz"),
                "--metric", f"{metric_pkg}:match_rate")
    err = capsys.readouterr().err
    assert rc == 2 and "needs labels" in err and "'labels'" in err


def test_bench_config_metric_accepts_references_and_rejects_other_text():
    assert BenchConfig(metric="mypkg.metrics:exact_match").metric == "mypkg.metrics:exact_match"
    assert BenchConfig(metric="top5").metric == "top5"
    with pytest.raises(ConfigError, match="unknown metric 'bleu'"):
        BenchConfig(metric="bleu")


def test_bench_without_data_feeds_token_ids_below_the_embedding_rows(tmp_path, capsys):
    """Before: ints in [0, 100) for a 50-row table -> ONNX Runtime 'indices element out of data bounds'."""
    model = _embedding(tmp_path / "emb.onnx", rows=50)
    assert _bench(tmp_path, model, tmp_path / "o") == 0, capsys.readouterr().err
    feeds = random_feeds(bench_specs(model), 64)
    assert feeds["ids"].shape == (64, 8) and feeds["ids"].dtype == np.int64
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 50 and len(np.unique(feeds["ids"])) > 10


def test_dynamic_sequence_needs_input_or_data(tmp_path, capsys):
    model = _embedding(tmp_path / "emb.onnx", seq="seq", rows=50)
    rc = _bench(tmp_path, model, tmp_path / "o")
    err = capsys.readouterr().err
    assert rc == 2 and "--input ids:int64:batchxseq=16..128" in err and "--data" in err
    assert len([ln for ln in err.splitlines() if "error" in ln]) == 1
    assert _bench(tmp_path, model, tmp_path / "o", "--input", "ids:int64:batchxseq=4..12") == 0
    feeds = random_feeds(bench_specs(model, parse_input_specs(["ids:int64:batchxseq=4..12"])), 16)
    assert feeds["ids"].shape == (16, 12) and feeds["ids"].max() < 50  # the graph's range is kept
    feeds = random_feeds(bench_specs(model, parse_input_specs(["ids:int64:batchxseq=4..12:0..7"])), 16)
    assert feeds["ids"].max() < 7


def test_input_contradicting_the_model_is_one_line(tmp_path, capsys):
    model = _embedding(tmp_path / "emb.onnx", rows=50)
    rc = _bench(tmp_path, model, tmp_path / "o", "--input", "ids:float32:batchx8")
    err = capsys.readouterr().err
    assert rc == 2 and "declared float32 but the model takes int64" in err


def test_dynamic_dim_hint_is_a_valid_input_spec_for_paddle_style_names(tmp_path, capsys):
    """Paddle2ONNX names dims '?' / 'p2o.DynamicDimension.1': the suggested --input must parse and run."""
    model = _embedding(tmp_path / "emb.onnx", seq="p2o.DynamicDimension.1", rows=50)
    assert _bench(tmp_path, model, tmp_path / "o") == 2
    err = capsys.readouterr().err
    hint = err.split("pass --input ")[1].split(" ")[0]
    assert hint == "ids:int64:batchxd1=16..128"
    assert _bench(tmp_path, model, tmp_path / "o", "--input", hint) == 0


def test_a_users_metric_gets_read_only_outputs(tmp_path, data, metric_pkg, capsys):
    npz, _, _ = data
    model = _classifier(tmp_path / "m.onnx")
    rc = _bench(tmp_path, model, tmp_path / "o", "--data", str(npz), "--metric", f"{metric_pkg}:scribble")
    err = capsys.readouterr().err
    assert rc == 2 and "read-only" in err and "Traceback" not in err
