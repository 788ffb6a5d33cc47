"""The sensitivity pass and the fewest-layers-in-float search shared by the fidelity guard and the budget."""

from __future__ import annotations

import numpy as np
import onnx

from _helpers.onnx_models import fragile_mlp
from trtopt.calib import CalibrationConfig, NumpySource, calibrate
from trtopt.onnx.exec import exposed_bytes, predict
from trtopt.quant import QuantizeConfig, quantize_qdq
from trtopt.quant.qdq import prepare_for_qdq
from trtopt.quant.search import Answer, fewest_in_float
from trtopt.quant.sensitivity import local_sensitivity, model_sensitivity, output_error, quantized_layers, side_by_side


def _setup(tmp_path):
    path, x = fragile_mlp(tmp_path / "mlp.onnx", 400.0)
    table = calibrate(path, NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    return path, x, table


def test_local_ranking_puts_the_fragile_layer_first_like_the_whole_model_ranking(tmp_path):
    path, x, table = _setup(tmp_path)
    q = quantize_qdq(path, table).model
    layers = quantized_layers(q)
    local = local_sensitivity(q, layers, {"x": x}, batch_size=16)
    assert next(iter(local)) == "/first/Gemm" and set(local) == set(layers)
    assert local["/first/Gemm"] > 10 * max(v for k, v in local.items() if k != "/first/Gemm")
    ref = list(predict(onnx.load(path), {"x": x}, 64).values())
    whole = model_sensitivity(prepare_for_qdq(path), table, QuantizeConfig(), layers,
                              lambda one: output_error(list(predict(one, {"x": x}, 64).values()), ref))
    assert next(iter(whole)) == next(iter(local))
    assert local == local_sensitivity(q, layers, {"x": x}, batch_size=5)  # the same set whatever the call size


def test_side_by_side_keeps_the_fp32_model_on_its_main_path(tmp_path):
    path, x, table = _setup(tmp_path)
    q = quantize_qdq(path, table).model
    both, outs = side_by_side(q, set(quantized_layers(q)))
    assert set(outs) == set(quantized_layers(q))
    onnx.checker.check_model(both, full_check=True)
    fp32 = predict(onnx.load(path), {"x": x}, 64)["logits"]
    np.testing.assert_allclose(predict(both, {"x": x}, 64)["logits"], fp32, rtol=1e-5, atol=1e-5)
    seen = onnx.ModelProto()
    seen.ParseFromString(exposed_bytes(both, ["h1", "h1::int8"]))
    got = predict(seen, {"x": x}, 64, outputs=["h1", "h1::int8"])
    err = np.sum((got["h1::int8"] - got["h1"]) ** 2) / np.sum(got["h1"] ** 2)
    assert err > 1e-3  # the INT8 copy of the fragile layer sees its Q/DQ inputs


def test_the_search_finds_the_fewest_layers_the_injected_judge_passes(tmp_path):
    path, x, table = _setup(tmp_path)
    prep = prepare_for_qdq(path)
    seen: list[int] = []

    def judge(cand) -> Answer:  # passes once two layers are kept in float
        kept = sum(1 for w in cand.summary.kept_float.values() if w == "excluded")
        seen.append(kept)
        return Answer(kept >= 2, float(kept), f"{kept} kept")

    res = fewest_in_float(prep, table, QuantizeConfig(), judge, {"x": x}, 16)
    assert not res.all_int8.passed and res.verdict.passed
    assert len(res.kept) == 2 and res.kept == list(res.sensitivity)[:2]
    assert res.kept[0] == "/first/Gemm"
    assert seen == [0, 1, 2]  # all-INT8, then doubling 1 -> 2: each candidate judged once
    assert {n for n, w in res.qdq.summary.kept_float.items() if w == "excluded"} == set(res.kept)


def test_the_search_reports_failure_when_no_allowed_float_set_passes(tmp_path):
    path, x, table = _setup(tmp_path)
    res = fewest_in_float(prepare_for_qdq(path), table, QuantizeConfig(), lambda c: Answer(False), {"x": x}, 16)
    assert not res.verdict.passed and len(res.kept) == len(res.layers) - 1  # the guard never keeps every layer
    every = fewest_in_float(prepare_for_qdq(path), table, QuantizeConfig(), lambda c: Answer(False), {"x": x}, 16,
                            may_keep_all=True)
    assert len(every.kept) == len(every.layers)  # the budget may
