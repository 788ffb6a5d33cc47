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

from trtopt.backends.tensorrt.variants import build_variant, prepare_variant_graphs  # noqa: E402
from trtopt.cli.cmd_demo import demo_recipe_path  # noqa: E402
from trtopt.recipe import VARIANTS  # noqa: E402


@pytest.fixture(scope="module")
def digits_graphs(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    recipe, graphs, failed = prepare_variant_graphs(
        demo_recipe_path(), out, {"recipe": {"variants": list(VARIANTS)}, "workload": {"train_epochs": 1},
                                  "finetune": {"epochs": 1}})
    assert not failed
    return recipe, graphs, out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_digits_variant_builds_and_compiles_as_asked(digits_graphs, variant):
    recipe, graphs, out = digits_graphs
    sparse, precision, _fp16_rest = VARIANTS[variant]
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
        assert b.compute == {"FP16" if precision == "fp16" else "FP32": n_compute}
