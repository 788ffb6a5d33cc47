"""Histograms: the same table whatever the batching and order, exact merges, NaN left out."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from _helpers.calib_graphs import float_model, matmul_model, ort_config, weight
from trtopt.calib import AbsHistogram, NumpySource, calibrate


@pytest.mark.parametrize("method", ["auto", "entropy", "percentile", "mse"])
def test_same_data_gives_the_same_table_whatever_batch_size_and_order(method):
    r = np.random.default_rng(6)  # post-ReLU values with a per-sample scale: the first batch rarely holds the max
    x = (np.maximum(r.standard_normal((300, 16)), 0) * r.lognormal(0, 1, (300, 1))).astype(np.float32)
    m = matmul_model()
    tables = [calibrate(m, NumpySource({"x": x}, batch_size=bs, seed=seed), ort_config(method, run_batch_size=0)).amax
              for bs, seed in ((1, 0), (7, 1), (32, 2), (256, 3), (300, None))]
    assert all(t == tables[0] for t in tables[1:])


def test_histogram_merge_equals_one_pass_in_any_order():
    r = np.random.default_rng(7)
    parts = [r.standard_normal(1000).astype(np.float32) * s for s in (0.1, 5.0, 1.0, 40.0)]
    one = AbsHistogram(256)
    one.update(np.concatenate(parts))
    for order in ((0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)):
        seq, merged = AbsHistogram(256), AbsHistogram(256)
        for i in order:
            seq.update(parts[i])
            part = AbsHistogram(256)
            part.update(parts[i])
            merged.merge(part)
        for h in (seq, merged):
            assert h.exponent == one.exponent and np.array_equal(h.counts, one.counts)
            assert np.array_equal(h.log_counts, one.log_counts)
    ref = np.bincount(np.floor(np.abs(np.concatenate(parts)) / one.width).astype(int), minlength=256)
    assert np.array_equal(one.counts, ref)


def test_nan_activations_are_left_out_of_channel_maxima_and_histograms(caplog):
    nodes = [helper.make_node("Log", ["x"], ["l"]), helper.make_node("MatMul", ["l", "w"], ["y"])]
    m = float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])], [weight((8, 4))])
    x = np.random.default_rng(8).uniform(0.5, 3.0, (16, 8)).astype(np.float32)
    x[3] = -1.0  # one sample (all padding) -> NaN everywhere in it
    x[5, 2] = 0.0  # -> -inf
    with caplog.at_level("WARNING"):
        t = calibrate(m, NumpySource({"x": x}), ort_config("minmax"))
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(x.astype(np.float64))
    ok = np.isfinite(lg)
    ref = np.where(ok, np.abs(lg), 0).max(axis=0)
    np.testing.assert_allclose(t.channel_amax["l"], ref, rtol=1e-6)
    assert t.amax["l"] == pytest.approx(np.abs(lg[ok]).max(), rel=1e-6)
    assert "9 NaN/Inf values left out of its per-channel maxima" in caplog.text
    assert "9 NaN/Inf values" in t.info["l"]["flags"][0]
