"""End-to-end pipeline on the digits workload (short settings): every stage runs for real."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("torch")

from trtopt.pipeline import Pipeline
from trtopt.recipe import recipe_from_dict

VARIANTS = ["fp32", "fp16", "int8", "sparse24-fp32", "sparse24-int8"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    recipe = recipe_from_dict({
        "recipe": {"name": "t", "variants": VARIANTS},
        "workload": {"model": "digits_cnn", "train_epochs": 15},
        "prune": {"method": "magnitude"},
        "finetune": {"epochs": 3, "distill_alpha": 0.5},
        "bench": {"batch_sizes": [16], "warmup": 1, "iterations": 5},
    })
    stages = []
    result = Pipeline(recipe, out, progress=lambda s, d: stages.append(s)).run()
    return out, result, stages


def _by_name(report_json):
    return {v["name"]: v for v in report_json["variants"]}


def test_every_variant_ran_and_report_is_written(demo_run):
    out, _result, stages = demo_run
    for stage in ("workload", "prune", "finetune", "export", "calibrate", "quantize", "bench", "report"):
        assert stage in stages
    data = json.loads((out / "report.json").read_text())
    assert data["schema"].startswith("trtopt.report/")
    v = _by_name(data)
    assert set(v) == set(VARIANTS)
    for name in VARIANTS:
        assert v[name]["status"] == "ok", v[name]
        assert v[name]["throughput_sps"] > 0
        assert v[name]["accuracy"]["metric"] == "top1"
        # all variants timed together in interleaved rounds; speedups paired, with intervals
        assert v[name]["timing"]["method"] == "interleaved" and v[name]["timing"]["group"] == "b16"
        assert v[name]["timing"]["rounds"] == 5 and v[name]["vs_fp32"]["speedup_ci95"] is not None
    assert v["int8"]["vs_fp32"]["speedup_method"] == "paired-rounds"
    assert (out / "report.md").is_file()


def test_accuracy_is_measured_on_held_out_split_and_int8_stays_close(demo_run):
    _, result, _ = demo_run
    data = json.loads(json.dumps(result.report.to_dict()))
    v = _by_name(data)
    fp32 = v["fp32"]["accuracy"]["value"]
    assert fp32 > 90.0
    assert result.report.workload["num_eval"] == 540  # the held-out split, not the training data
    assert abs(v["int8"]["accuracy"]["value"] - fp32) <= 3.0
    assert abs(v["fp16"]["accuracy"]["value"] - fp32) <= 0.5
    assert v["fp32"]["vs_fp32"]["speedup"] == pytest.approx(1.0)
    assert v["int8"]["vs_fp32"]["accuracy_delta"] == pytest.approx(v["int8"]["accuracy"]["value"] - fp32)


def test_artifacts_have_the_promised_structure(demo_run):
    out, _, _ = demo_run
    from trtopt.sparsity import check_2to4

    int8 = onnx.load(str(out / "models" / "int8.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    sparse = onnx.load(str(out / "models" / "sparse-fp32.onnx"))
    convs = [n for n in sparse.graph.node if n.op_type in ("Conv", "Gemm")]
    inits = {t.name: numpy_helper.to_array(t) for t in sparse.graph.initializer}
    checked = 0
    for n in convs:
        w = inits.get(n.input[1])
        if w is not None and w.shape[1] % 4 == 0:
            assert check_2to4(w, axis=1), n.name
            checked += 1
    assert checked >= 3
    fp16 = onnx.load(str(out / "models" / "fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    tables = sorted(p.name for p in (out / "calibration").iterdir())
    assert "dense.calib.json" in tables and "dense.calib.cache" in tables
    cache = (out / "calibration" / "dense.calib.cache").read_text().splitlines()
    assert cache[0].startswith("TRT-") and cache[0].endswith("EntropyCalibration2")
    amax = json.loads((out / "calibration" / "dense.calib.json").read_text())
    assert np.isfinite(list(_amaxes(amax))).all()


def _amaxes(table_json):
    for value in table_json.get("tensors", table_json.get("amax", {})).values():
        yield value["amax"] if isinstance(value, dict) else value


@pytest.mark.parametrize("weak_typing", [True, False], ids=["trt10", "trt11"])
def test_every_variant_graph_is_buildable_by_tensorrt_plan(demo_run, weak_typing):
    """The pipeline's TensorRT options for each variant plan cleanly on 10.x and 11.x feature sets."""
    from trtopt.backends.tensorrt.features import Features
    from trtopt.backends.tensorrt.graph import graph_info
    from trtopt.backends.tensorrt.plan import plan_build
    from trtopt.run.engines import runner_options

    out = demo_run[0]
    for variant in VARIANTS:
        opts = runner_options("tensorrt", variant, None, out / "engines")
        path = out / "models" / (f"{variant}.onnx" if variant not in ("fp32", "sparse24-fp32")
                                 else ("dense-fp32.onnx" if variant == "fp32" else "sparse-fp32.onnx"))
        info = graph_info(path.read_bytes())
        plan = plan_build(opts["config"], Features(weak_typing=weak_typing), info)
        assert plan.strongly_typed, variant  # precision comes from the graph on both versions
        assert ("SPARSE_WEIGHTS" in plan.builder_flags) == variant.startswith("sparse24"), variant
        assert "INT8" not in plan.builder_flags and not plan.calibrator, variant


def test_sparse_variants_are_judged_against_the_pruned_fp32_model():
    from trtopt.benchmark.session import reference_for
    from trtopt.pipeline import recipe_references

    refs = recipe_references(("fp32", "int8", "sparse24-fp32", "sparse24-int8"))
    done = ["fp32", "sparse24-fp32"]
    # (None, judged): compared with the baseline, the recipe's fp32 variant
    assert reference_for("int8", refs, done) == (None, True)
    assert reference_for("sparse24-int8", refs, done) == ("sparse24-fp32", True)
    assert reference_for("sparse24-fp32", refs, ["fp32"]) == (None, False)  # pruning: accuracy decides
    assert reference_for("sparse24-int8", refs, ["fp32"]) == (None, False)


def _run_recipe_in_child(tmp_path, model, variants, script: str = ""):
    """``trtopt run`` on a user's ``.onnx`` in a child process: unfixed, ONNX Runtime would kill the test process."""
    import subprocess
    import sys

    from _helpers.ort_crash_graphs import child_env
    from _helpers.user_project import FAST_BENCH_TOML

    onnx.save(model, tmp_path / "user.onnx")
    (tmp_path / "r.toml").write_text(f'[recipe]\nname = "user"\nvariants = {json.dumps(variants)}\n[workload]\n'
                                     f'model = "user.onnx"\nnum_calib = 8\nnum_eval = 8\n{FAST_BENCH_TOML}\n')
    code = script + "import sys\nfrom trtopt.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    args = [sys.executable, "-c", code, "run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "out")]
    return subprocess.run(args, capture_output=True, text=True, env=child_env(), timeout=600)


@pytest.mark.slow
def test_a_variant_whose_model_onnx_runtime_cannot_open_fails_alone(tmp_path):
    """An FP16 conversion whose result crashes ONNX Runtime's optimized session (the seq-first projection in FP16):
    that variant is reported failed with the reason and nothing is left of it; the FP32 variant is benchmarked."""
    from _helpers.ort_crash_graphs import seq_first_projection

    onnx.save(seq_first_projection(fp16=True), tmp_path / "crashing16.onnx")
    conversion = (f"import onnx, trtopt.quant.api\nfrom trtopt.quant.fp16 import FP16Result\n"
                  f"trtopt.quant.api.convert_fp16 = lambda *a, **k: FP16Result("
                  f"onnx.load({str(tmp_path / 'crashing16.onnx')!r}))\n")
    res = _run_recipe_in_child(tmp_path, seq_first_projection(fp16=False), ["fp32", "fp16"], conversion)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    rows = _by_name(json.loads((tmp_path / "out" / "report.json").read_text()))
    assert rows["fp32"]["status"] == "ok"
    assert rows["fp16"]["status"] == "failed"
    assert "ONNX Runtime crashed (SIGSEGV)" in rows["fp16"]["reason"] and "fp16.onnx" in rows["fp16"]["reason"]
    assert not (tmp_path / "out" / "models" / "fp16.onnx").exists()


def test_a_user_model_that_crashes_onnx_runtime_fails_the_run_up_front(tmp_path):
    """Calibration and the bench open the user's file in ONNX Runtime: a crash there is one line, exit 2, no folders."""
    from _helpers.ort_crash_graphs import seq_first_projection

    res = _run_recipe_in_child(tmp_path, seq_first_projection(fp16=True), ["fp32", "fp16"])
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "user.onnx: ONNX Runtime crashed (SIGSEGV)" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
