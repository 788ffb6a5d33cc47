"""``trtopt quantize`` and the recipe make the same model from the same model, table and data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from _helpers.onnx_models import fragile_mlp
from trtopt.calib import CalibrationConfig, NumpySource, calibrate
from trtopt.cli.main import main
from trtopt.errors import ConfigError
from trtopt.quant import CalibData, FP16Config, QuantizeConfig, quantize, quantize_qdq


def _mlp(tmp_path):
    """The fragile MLP (input channel 0 is large), 24 calibration samples, its min/max table."""
    path, x = fragile_mlp(tmp_path / "mlp.onnx", 300.0, samples=24)
    np.savez(tmp_path / "calib.npz", x=x)
    table = calibrate(path, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    table.save_json(tmp_path / "mlp.calib.json")
    return path, x, table


def _recipe_variant(tmp_path, path, x, table, variant):
    """The recipe pipeline's variant making, on the same model, table and calibration data."""
    from trtopt.pipeline import Pipeline
    from trtopt.recipe import recipe_from_dict

    pipe = Pipeline(recipe_from_dict({"workload": {"model": str(path)}}), tmp_path / "run")
    pipe.workload = SimpleNamespace(as_feeds=lambda d: d, calib={"x": x}, eval_x={"x": x})
    return onnx.load(pipe._variant_model(variant, {"dense": path}, {"dense": table}))


def _same(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    assert {p.key: p.value for p in a.metadata_props} == {p.key: p.value for p in b.metadata_props}


@pytest.mark.parametrize(("variant", "flags"), [("int8", []), ("int8-fp16", ["--fp16-rest"]), ("fp16", ["--fp16"])])
def test_cli_and_recipe_make_the_same_model(tmp_path, variant, flags):
    path, x, table = _mlp(tmp_path)
    mode = [] if variant == "fp16" else ["--calib", str(tmp_path / "mlp.calib.json")]
    out = tmp_path / f"cli-{variant}.onnx"
    assert main(["quantize", str(path), *mode, *flags, "--calib-data", str(tmp_path / "calib.npz"),
                 "--out", str(out)]) == 0
    _same(onnx.load(out), _recipe_variant(tmp_path, path, x, table, variant))


def test_the_result_is_typed_and_says_what_the_guard_kept(tmp_path):
    path, x, table = _mlp(tmp_path)
    res = quantize(path, table, QuantizeConfig(), CalibData({"x": x}))
    assert res.guard is not None and res.summary is not None and res.summary.int8_nodes >= 1
    assert set(res.guard.kept_nodes) <= set(res.summary.kept_float)
    plain = quantize(path, table, QuantizeConfig(fidelity_guard=False), CalibData({"x": x}))
    assert plain.guard is None and plain.summary.int8_nodes == 3 and not plain.summary.kept_float


def test_the_steps_results_are_passed_on_not_read_back_from_the_model(tmp_path):
    path, x, table = _mlp(tmp_path)
    res = quantize(path, table, QuantizeConfig(), CalibData({"x": x}))
    assert res.summary is res.guard.qdq.summary  # the guard's object, not a copy parsed from metadata
    assert all(res.summary.kept_float[n].startswith("fidelity guard") for n in res.guard.kept_nodes)
    del res.model.metadata_props[:]  # provenance only: the typed results stand without it
    assert res.summary.kept_float and res.guard.kept_nodes
    both = quantize(path, table, QuantizeConfig(fp16_rest=True, fidelity_guard=False), CalibData({"x": x}))
    step = quantize_qdq(path, table, QuantizeConfig(fp16_rest=True))
    assert both.fp16_reasons == step.fp16_reasons
    assert step.summary.as_dict() == json.loads(
        next(p.value for p in step.model.metadata_props if p.key == "trtopt.int8.summary"))


def test_int8_fp16_takes_its_fp16_ranges_from_every_float_tensor_of_the_data(tmp_path):
    path, x, table = _mlp(tmp_path)
    res = quantize(path, table, QuantizeConfig(fp16_rest=True, fidelity_guard=False), CalibData({"x": x}))
    assert res.fp16_checked
    assert not quantize(path, table, QuantizeConfig(fp16_rest=True, fidelity_guard=False)).fp16_checked


def test_fp16_reasons_come_back_typed(tmp_path):
    path, x, _ = _mlp(tmp_path)
    res = quantize(path, None, FP16Config(node_block_list=(r"^/head/",)), CalibData({"x": x}))
    assert res.summary is None and res.fp16_checked
    assert "/head/Gemm" in res.fp16_reasons


def test_the_mode_and_its_inputs_must_agree(tmp_path):
    path, _, table = _mlp(tmp_path)
    with pytest.raises(ConfigError, match="no calibration table"):
        quantize(path, table, FP16Config())
    with pytest.raises(ConfigError, match="needs a calibration table"):
        quantize(path, None, QuantizeConfig())


def test_the_int8_share_of_macs_weighs_each_layer_by_its_compute(tmp_path, capsys):
    path, x, table = _mlp(tmp_path)
    macs = {"/first/Gemm": 16 * 32, "/mid/Gemm": 32 * 32, "/head/Gemm": 32 * 10}  # M=1: K*N per layer
    full = quantize(path, table, QuantizeConfig(fidelity_guard=False), CalibData({"x": x})).mac_share
    assert full is not None and full.total_macs == sum(macs.values()) and full.share == 1.0
    part = quantize(path, table, QuantizeConfig(fidelity_guard=False, exclude_nodes=("/mid/Gemm",)),
                    CalibData({"x": x})).mac_share
    assert part.int8_macs == macs["/first/Gemm"] + macs["/head/Gemm"]
    assert [n.name for n in part.top_float()] == ["/mid/Gemm"] and part.shapes == {"x": (1, 16)}
    assert main(["quantize", str(path), "--calib", str(tmp_path / "mlp.calib.json"), "--exclude", "/mid/Gemm",
                 "--out", str(tmp_path / "q.onnx")]) == 0
    err = capsys.readouterr().err
    assert f"INT8 MACs: {100 * part.share:.1f}% of" in err and "float: /mid/Gemm (Gemm)" in err
