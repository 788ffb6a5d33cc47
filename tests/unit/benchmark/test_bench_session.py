"""``trtopt bench`` and the recipe run measure through one session: same references, same ``--strict`` rule."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers.onnx_models import linear_model
from trtopt.benchmark import BenchConfig, EngineCell
from trtopt.benchmark.report import strict_problems
from trtopt.benchmark.session import reference_for
from trtopt.benchmark.suite import bench_models
from trtopt.pipeline import Pipeline, recipe_references, run_recipe

VARIANTS = ("fp32", "int8", "sparse24-fp32", "sparse24-int8")
FAST = {"batch_sizes": [4], "warmup": 1, "iterations": 5, "rounds": 5, "min_rounds": 5}


@pytest.fixture
def four_models(tmp_path):
    """The recipe's four variants as files named after them: int8 broken; the 2:4 pair another model."""
    rng = np.random.default_rng(0)
    w, other = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    files = {"fp32": linear_model(tmp_path / "fp32.onnx", w),
             "int8": linear_model(tmp_path / "int8.onnx", rng.normal(size=(8, 4))),  # far from fp32: judged, fails
             "sparse24-fp32": linear_model(tmp_path / "sparse24-fp32.onnx", other),  # far from fp32: not judged
             "sparse24-int8": linear_model(tmp_path / "sparse24-int8.onnx", other)}  # = the pruned fp32: ok
    x = rng.normal(size=(16, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    return files, x


def _recipe_report(monkeypatch, tmp_path, files, variants=VARIANTS):
    """``run_recipe`` on the files of ``variants``: the preparation stages replaced by the ready graphs."""
    from pathlib import Path

    def prepare(self, workload):
        self.workload = workload
        return {v: Path(files[v]) for v in variants}

    monkeypatch.setattr(Pipeline, "prepare", prepare)
    monkeypatch.setattr("trtopt.pipeline.engine_column", lambda *a, **k: EngineCell("0.1 MB", "ok"))
    res = run_recipe({"recipe": {"name": "t", "variants": list(variants), "backend": "onnxruntime"},
                      "workload": {"model": files["fp32"], "eval_data": str(tmp_path / "eval.npz"),
                                   "calib_data": str(tmp_path / "eval.npz")},
                      "bench": FAST}, tmp_path / "run")
    return res.report


def test_reference_policy_named_then_baseline_then_not_judged():
    refs = {"b": "a", "c": "none"}
    assert reference_for("x", refs, ["first"]) == (None, True)  # the baseline, judged
    assert reference_for("b", refs, ["first", "a"]) == ("a", True)
    assert reference_for("b", refs, ["first"]) == (None, False)  # its reference did not run: reported only
    assert reference_for("c", refs, ["first", "a"]) == (None, False)


def test_recipe_references_judge_2to4_variants_against_the_pruned_model():
    assert recipe_references(VARIANTS) == {"sparse24-fp32": "none", "sparse24-int8": "sparse24-fp32"}


def test_bench_and_run_judge_the_same_models_against_the_same_references(four_models, tmp_path, monkeypatch):
    files, x = four_models
    bench = bench_models([files[v] for v in VARIANTS], ["onnxruntime"], BenchConfig(**FAST), data={"x": x},
                         references=recipe_references(VARIANTS))
    run = _recipe_report(monkeypatch, tmp_path, files)

    def judged(report):
        return {v.name: (v.accuracy.reference, v.accuracy.judged, v.accuracy.fidelity_ok) for v in report.variants}

    assert judged(bench) == judged(run) == {
        "fp32": (None, True, None), "int8": ("fp32", True, False),
        "sparse24-fp32": ("fp32", False, None), "sparse24-int8": ("sparse24-fp32", True, True)}
    assert strict_problems(bench) == strict_problems(run)
    assert [p.split(":")[0] for p in strict_problems(run)] == ["int8@4 (onnxruntime)"]


def test_a_variant_whose_reference_is_missing_says_why_it_is_not_judged(four_models, tmp_path, monkeypatch):
    from trtopt.benchmark.render import render_markdown

    files, _ = four_models
    rep = _recipe_report(monkeypatch, tmp_path, files, ("fp32", "int8", "sparse24-int8"))  # no pruned FP32 model
    row = next(v for v in rep.variants if v.name == "sparse24-int8")
    assert (row.accuracy.reference, row.accuracy.judged) == ("fp32", False)
    assert "its reference 'sparse24-fp32' has no outputs in this run" in row.extra["fidelity_note"]
    assert "run 'sparse24-fp32' too to judge it" in render_markdown(rep)
    assert "fidelity_note" not in next(v for v in rep.variants if v.name == "int8").extra
