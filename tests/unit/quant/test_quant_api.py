"""``trtopt quantize`` and the recipe make the same model from the same model, table and data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.calib import CalibrationConfig, NumpySource, calibrate
from trtopt.cli.main import main
from trtopt.errors import ConfigError
from trtopt.quant import CalibData, FP16Config, QuantizeConfig, quantize


def _mlp(tmp_path):
    """x[N,16] -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> logits[N,10]; input channel 0 is large (a fragile layer)."""
    rng = np.random.default_rng(0)
    ws = {"w1": rng.standard_normal((32, 16)) * 0.3, "w2": rng.standard_normal((32, 32)) * 0.2,
          "w3": rng.standard_normal((10, 32)) * 0.3}
    ws["w1"][:, 0] /= 300.0
    n = helper.make_node
    nodes = [n("Gemm", ["x", "w1"], ["h1"], name="/first/Gemm", transB=1), n("Relu", ["h1"], ["r1"]),
             n("Gemm", ["r1", "w2"], ["h2"], name="/mid/Gemm", transB=1), n("Relu", ["h2"], ["r2"]),
             n("Gemm", ["r2", "w3"], ["logits"], name="/head/Gemm", transB=1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(w.astype(np.float32), k) for k, w in ws.items()])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.standard_normal((24, 16)).astype(np.float32)
    x[:, 0] *= 300.0
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
