"""Ranges per tensor: ``auto`` on SiLU / bounded ops / softmax, outliers, degenerate histograms."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.calib_graphs import ORT, float_model, matmul_model, ort_config, silu_data, silu_model, weight
from trtopt.calib import AbsHistogram, CalibrationConfig, NumpySource, calibrate
from trtopt.calib.ranges import CLIP_LIMIT, quant_error


def _fake_quant_mse(v, amax):
    s = amax / 127.0
    return float(np.mean((np.clip(np.round(v / s), -127, 127) * s - v) ** 2))


def test_auto_does_not_collapse_on_silu_where_entropy_does():
    x = silu_data()
    act = np.abs(x / (1 + np.exp(-x.astype(np.float64))))
    m = silu_model()
    ent = calibrate(m, NumpySource({"x": x}), ort_config("entropy")).amax["act"]
    auto = calibrate(m, NumpySource({"x": x}), ort_config("auto"))
    a = auto.amax["act"]
    assert ent < 0.5 * act.max()  # the fault: entropy keeps the dip, clips the positive activations
    assert (act > a).mean() <= CLIP_LIMIT  # auto clips at most 0.1 % of the values
    assert _fake_quant_mse(act, a) < 0.5 * _fake_quant_mse(act, ent)
    row = auto.info["act"]
    assert row["method"] != "entropy" and "rejected" in row["candidates"]["entropy"]


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid", "HardSigmoid", "Tanh"])
def test_bounded_ops_get_their_analytic_range_through_shape_ops(op):
    nodes = [helper.make_node(op, ["x"], ["b"]),
             helper.make_node("Reshape", ["b", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "w"], ["y"])]
    shape = numpy_helper.from_array(np.array([0, 4, 8], np.int64), "shape")
    m = float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])], [shape, weight((4, 3))],
               outputs=(("y", ["N", 8, 3]),))
    x = (np.random.default_rng(1).standard_normal((64, 32)) * 3).astype(np.float32)
    for method in ("auto", "entropy", "percentile"):
        t = calibrate(m, NumpySource({"x": x}), ort_config(method))
        assert t.amax["t"] == 1.0 and t.info["t"]["method"] == "analytic", method
    observed = calibrate(m, NumpySource({"x": x}), ort_config("minmax"))
    assert observed.info["t"]["method"] == "minmax" and observed.amax["t"] <= 1.0 + 1e-6  # the observed max
    strict = calibrate(m, NumpySource({"x": x}), ort_config("entropy", analytic=False))
    assert strict.info["t"]["method"] == "entropy"


def test_softmax_attention_probabilities_are_not_clipped():
    # the case: entropy puts amax far below the max probability
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    m = float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16])],
                    [weight((16, 8), "v")], outputs=(("y", ["N", 16, 8]),))
    x = (np.random.default_rng(2).standard_normal((32, 16, 16)) * 2).astype(np.float32)
    p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    assert calibrate(m, NumpySource({"x": x}), ort_config("auto")).amax["p"] >= p.max()


@pytest.mark.parametrize("method", ["auto", "entropy", "percentile", "mse", "minmax"])
def test_one_outlier_is_bounded_in_time_and_flagged(method, caplog):
    x = np.random.default_rng(3).standard_normal((256, 16)).astype(np.float32)
    x[17, 5] = 1e6
    t0 = time.perf_counter()
    with caplog.at_level("WARNING"):
        t = calibrate(matmul_model(), NumpySource({"x": x}), ort_config(method))
    assert time.perf_counter() - t0 < 10  # mse never finished before
    assert "dominated by 1 of" in caplog.text and "dominated by 1 of" in t.info["x"]["flags"][0]
    normal = np.abs(np.delete(x.ravel(), 17 * 16 + 5))
    if method == "auto":  # keeps the ordinary data's range (log-histogram resolution: ~12 %)
        assert np.quantile(normal, 0.999) <= t.amax["x"] <= 1.25 * normal.max()


def test_quant_error_matches_fake_quantization_of_the_values():
    v = np.abs(np.random.default_rng(5).standard_normal(200000))
    h = AbsHistogram(2048)
    h.update(v.astype(np.float32))
    for a in (1.0, 2.5, float(v.max())):
        est = quant_error(h.used_counts, h.used_edges, np.array([a]))[0]
        assert est == pytest.approx(_fake_quant_mse(v, a), rel=0.15), a


def test_softmax_behind_a_nan_guarding_where_is_analytic_too():
    # torch exports BERT attention as Where(IsNaN(softmax), 0, softmax) -> MatMul
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1), helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["pw"]), helper.make_node("MatMul", ["pw", "v"], ["y"])]
    m = float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16])],
               [zero, weight((16, 8), "v")], outputs=(("y", ["N", 16, 8]),))
    x = np.random.default_rng(13).standard_normal((8, 16, 16)).astype(np.float32)
    t = calibrate(m, NumpySource({"x": x}), ORT)
    assert t.amax["pw"] == 1.0 and t.info["pw"]["method"] == "analytic"


def test_auto_on_degenerate_histograms_never_gives_a_zero_or_tiny_range():
    from trtopt.calib.ranges import auto_amax, outlier_flag

    for skip in (False, True):
        x = np.zeros(5000, np.float32)
        x[7] = 1e6  # nothing but zeros besides the "outlier": it is the data
        h = AbsHistogram(skip_zeros=skip)
        h.update(x)
        assert auto_amax(h, CalibrationConfig(skip_zeros=skip), outlier_flag(h))[0] == 1e6
    h = AbsHistogram()
    h.update(np.full(5000, 3.0, np.float32))
    assert auto_amax(h, CalibrationConfig(), outlier_flag(h))[0] == 3.0
