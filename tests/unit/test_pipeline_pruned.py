"""Recipe variants from the structured and low-rank models: built, judged, timed against FP32, built for RTX."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from trtopt.pipeline import Pipeline, recipe_references
from trtopt.recipe import VARIANTS, recipe_from_dict

NAMES = ["fp32", "pruned-fp32", "pruned-int8", "lowrank-fp32"]


def _recipe(max_drop: float):
    return recipe_from_dict({
        "recipe": {"name": "t", "variants": NAMES},
        "workload": {"model": "digits_cnn", "train_epochs": 15},
        "structured": {"target_macs": 0.5},
        "lowrank": {"target_macs": 0.5, "min_features": 8},
        "schedule": {"steps": 2, "epochs": 2, "max_drop": max_drop},
        "bench": {"batch_sizes": [16], "warmup": 1, "iterations": 5},
    })


def test_pruned_and_low_rank_variants_run_with_speedups_against_fp32_and_rtx_engines(tmp_path):
    Pipeline(_recipe(100.0), tmp_path).run()
    data = json.loads((tmp_path / "report.json").read_text())
    rows = {v["name"]: v for v in data["variants"]}
    assert set(rows) == set(NAMES)
    assert [rows[n]["sparsity"] for n in NAMES] == ["dense", "structured", "structured", "low-rank"]
    for name in NAMES[1:]:
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["vs_fp32"]["speedup_method"] == "paired-rounds"
        assert rows[name]["vs_fp32"]["speedup_ci95"] is not None
        assert rows[name]["extra"]["engine"]["status"] == "ok"  # TensorRT-RTX built it ahead of time
    assert rows["pruned-int8"]["extra"]["engine"]["int8"] > 0
    stages = data["workload"]["stages"]
    assert stages["prune_structured"]["macs_ratio"] <= 0.5 and len(stages["prune_structured"]["steps"]) == 2
    assert any(c["rank"] for c in stages["prune_lowrank"]["layers"])
    assert (tmp_path / "models" / "pruned-fp32.onnx").is_file()
    assert (tmp_path / "models" / "lowrank-fp32.onnx").is_file()


def test_a_pruned_model_that_loses_the_task_fails_its_variants_not_the_run(tmp_path):
    recipe = recipe_from_dict({
        "recipe": {"name": "t", "variants": ["fp32", "pruned-fp32"]},
        "workload": {"model": "digits_cnn", "train_epochs": 15},
        "structured": {"target_macs": 0.03, "max_layer_ratio": 0.95, "protect_stem": False},
        "bench": {"batch_sizes": [16], "warmup": 1, "iterations": 5},
    })
    Pipeline(recipe, tmp_path).run()
    rows = {v["name"]: v for v in json.loads((tmp_path / "report.json").read_text())["variants"]}
    assert rows["fp32"]["status"] == "ok"
    assert rows["pruned-fp32"]["status"] == "failed" and "lost the task" in json.dumps(rows["pruned-fp32"])


def test_pruned_int8_is_judged_against_the_pruned_fp32_model():
    from trtopt.benchmark.session import reference_for

    refs = recipe_references(("fp32", "pruned-fp32", "pruned-int8", "lowrank-fp32"))
    assert reference_for("pruned-int8", refs, ["fp32", "pruned-fp32"]) == ("pruned-fp32", True)
    assert reference_for("pruned-fp32", refs, ["fp32"]) == (None, False)  # a different model: accuracy decides
    assert VARIANTS["pruned-int8"].kind == "pruned" and VARIANTS["lowrank-fp32"].kind == "lowrank"
