"""Issue 11 items 1-7 on small synthetic graphs, each re-creating the fault (expected values from numpy)."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.calib import AbsHistogram, CalibrationConfig, CalibrationTable, NumpySource, calibrate
from trtopt.calib.ranges import CLIP_LIMIT, quant_error
from trtopt.errors import InputError

ORT = CalibrationConfig(collector="onnxruntime")


def _model(nodes, inputs, inits=(), outputs=(("y", ["N", None]),)):
    g = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                               for n, s in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def _w(shape, name="w", seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _cfg(method, **kw):
    return CalibrationConfig(method=method, collector="onnxruntime", **kw)


def _fake_quant_mse(v, amax):
    s = amax / 127.0
    return float(np.mean((np.clip(np.round(v / s), -127, 127) * s - v) ** 2))


# -- item 1: SiLU outputs ---------------------------------------------------------------------------


def _silu_model():
    nodes = [helper.make_node("Sigmoid", ["x"], ["sg"]), helper.make_node("Mul", ["x", "sg"], ["act"]),
             helper.make_node("MatMul", ["act", "w"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])], [_w((64, 8))])


def _silu_data(n=512):
    r = np.random.default_rng(0)
    x = r.normal(-1.5, 1.0, (n, 64))  # most pre-activations sit around SiLU's minimum (-0.2785)
    pos = r.random((n, 64)) < 0.05
    x[pos] = r.exponential(0.3, pos.sum())  # a minority of positive activations with a long tail
    return x.astype(np.float32)


def test_auto_does_not_collapse_on_silu_where_entropy_does():
    x = _silu_data()
    act = np.abs(x / (1 + np.exp(-x.astype(np.float64))))
    m = _silu_model()
    ent = calibrate(m, NumpySource({"x": x}), _cfg("entropy")).amax["act"]
    auto = calibrate(m, NumpySource({"x": x}), _cfg("auto"))
    a = auto.amax["act"]
    assert ent < 0.5 * act.max()  # the fault: entropy keeps the dip, clips the positive activations
    assert (act > a).mean() <= CLIP_LIMIT  # auto clips at most 0.1 % of the values
    assert _fake_quant_mse(act, a) < 0.5 * _fake_quant_mse(act, ent)
    row = auto.info["act"]
    assert row["method"] != "entropy" and "rejected" in row["candidates"]["entropy"]


# -- item 2: bounded ops get analytic ranges ----------------------------------------------------------


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid", "HardSigmoid", "Tanh"])
def test_bounded_ops_get_their_analytic_range_through_shape_ops(op):
    nodes = [helper.make_node(op, ["x"], ["b"]),
             helper.make_node("Reshape", ["b", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "w"], ["y"])]
    shape = numpy_helper.from_array(np.array([0, 4, 8], np.int64), "shape")
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])], [shape, _w((4, 3))],
               outputs=(("y", ["N", 8, 3]),))
    x = (np.random.default_rng(1).standard_normal((64, 32)) * 3).astype(np.float32)
    for method in ("auto", "entropy", "percentile"):
        t = calibrate(m, NumpySource({"x": x}), _cfg(method))
        assert t.amax["t"] == 1.0 and t.info["t"]["method"] == "analytic", method
    observed = calibrate(m, NumpySource({"x": x}), _cfg("minmax"))
    assert observed.info["t"]["method"] == "minmax" and observed.amax["t"] <= 1.0 + 1e-6  # the observed max
    strict = calibrate(m, NumpySource({"x": x}), _cfg("entropy", analytic=False))
    assert strict.info["t"]["method"] == "entropy"


def test_softmax_attention_probabilities_are_not_clipped():
    # the case: entropy puts amax far below the max probability
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16])], [_w((16, 8), "v")],
               outputs=(("y", ["N", 16, 8]),))
    x = (np.random.default_rng(2).standard_normal((32, 16, 16)) * 2).astype(np.float32)
    p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    assert calibrate(m, NumpySource({"x": x}), _cfg("auto")).amax["p"] >= p.max()


# -- item 3: outliers ---------------------------------------------------------------------------------


def _mm_model(k=16):
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])], [_w((k, 4))])


@pytest.mark.parametrize("method", ["auto", "entropy", "percentile", "mse", "minmax"])
def test_one_outlier_is_bounded_in_time_and_flagged(method, caplog):
    x = np.random.default_rng(3).standard_normal((256, 16)).astype(np.float32)
    x[17, 5] = 1e6
    t0 = time.perf_counter()
    with caplog.at_level("WARNING"):
        t = calibrate(_mm_model(), NumpySource({"x": x}), _cfg(method))
    assert time.perf_counter() - t0 < 10  # mse never finished before
    assert "dominated by 1 of" in caplog.text and "dominated by 1 of" in t.info["x"]["flags"][0]
    normal = np.abs(np.delete(x.ravel(), 17 * 16 + 5))
    if method == "auto":  # keeps the ordinary data's range (log-histogram resolution: ~12 %)
        assert np.quantile(normal, 0.999) <= t.amax["x"] <= 1.25 * normal.max()


def test_methods_on_huge_histograms_stay_bounded():
    h = AbsHistogram(num_bins=1 << 16)  # a user asking for 65536 bins
    h.update(np.random.default_rng(4).standard_normal(100000).astype(np.float32))
    for method in ("mse", "entropy", "percentile"):
        from trtopt.calib.methods import compute_amax

        t0 = time.perf_counter()
        a = compute_amax(method, h.used_counts, h.used_edges, h.amax, start_bin=128)
        assert 0 < a <= h.amax * 1.001 and time.perf_counter() - t0 < 20, method


def test_quant_error_matches_fake_quantization_of_the_values():
    v = np.abs(np.random.default_rng(5).standard_normal(200000))
    h = AbsHistogram(2048)
    h.update(v.astype(np.float32))
    for a in (1.0, 2.5, float(v.max())):
        est = quant_error(h.used_counts, h.used_edges, np.array([a]))[0]
        assert est == pytest.approx(_fake_quant_mse(v, a), rel=0.15), a


# -- item 4: determinism --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "entropy", "percentile", "mse"])
def test_same_data_gives_the_same_table_whatever_batch_size_and_order(method):
    r = np.random.default_rng(6)  # post-ReLU values with a per-sample scale: the first batch rarely holds the max
    x = (np.maximum(r.standard_normal((300, 16)), 0) * r.lognormal(0, 1, (300, 1))).astype(np.float32)
    m = _mm_model()
    tables = [calibrate(m, NumpySource({"x": x}, batch_size=bs, seed=seed), _cfg(method, run_batch_size=0)).amax
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


# -- item 5: NaN/Inf out of every statistic ---------------------------------------------------------------


def test_nan_activations_are_left_out_of_channel_maxima_and_histograms(caplog):
    nodes = [helper.make_node("Log", ["x"], ["l"]), helper.make_node("MatMul", ["l", "w"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])], [_w((8, 4))])
    x = np.random.default_rng(8).uniform(0.5, 3.0, (16, 8)).astype(np.float32)
    x[3] = -1.0  # one sample (all padding) -> NaN everywhere in it
    x[5, 2] = 0.0  # -> -inf
    with caplog.at_level("WARNING"):
        t = calibrate(m, NumpySource({"x": x}), _cfg("minmax"))
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(x.astype(np.float64))
    ok = np.isfinite(lg)
    ref = np.where(ok, np.abs(lg), 0).max(axis=0)
    np.testing.assert_allclose(t.channel_amax["l"], ref, rtol=1e-6)
    assert t.amax["l"] == pytest.approx(np.abs(lg[ok]).max(), rel=1e-6)
    assert "9 NaN/Inf values left out of its per-channel maxima" in caplog.text
    assert "9 NaN/Inf values" in t.info["l"]["flags"][0]


# -- item 6: -1 / 0 / unnamed batch dims, empty results -----------------------------------------------------


@pytest.mark.parametrize("dim", [-1, 0, None, "N"])
def test_batch_dim_stored_as_minus_one_zero_or_unnamed_is_dynamic(dim):
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 16])
    if dim is None:  # a dim with neither value nor name
        vi.type.tensor_type.shape.dim[0].Clear()
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi], [_w((16, 4))])
    x = np.random.default_rng(9).standard_normal((40, 16)).astype(np.float32)
    t = calibrate(m, NumpySource({"x": x}, batch_size=16), ORT)
    assert len(t) == 1 and t.amax["x"] <= np.abs(x).max()


def test_an_empty_calibration_result_is_an_input_error():
    m = _mm_model()
    with pytest.raises(InputError, match="calibration produced no ranges"):
        calibrate(m, NumpySource({"x": np.zeros((8, 16), np.float32)}), ORT)


def test_cli_exits_2_with_one_line_on_an_empty_result(tmp_path, capsys):
    from trtopt.cli.main import main

    path = tmp_path / "m.onnx"
    onnx.save(_mm_model(), str(path))
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 16), np.float32))
    rc = main(["calibrate", str(path), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"),
               "--collector", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no ranges" in err[0]
    assert not (tmp_path / "o" / "m.calib.json").exists()


# -- item 7: per-call constant inputs ------------------------------------------------------------------------


def _state_model(state_dims):
    """y = MatMul(x + ReduceSum(state over its leading axes), w): state is not a sample on axis 0."""
    nodes = [helper.make_node("ReduceMean", ["state"], ["s"], axes=list(range(len(state_dims) - 1)), keepdims=0),
             helper.make_node("Add", ["x", "s"], ["h"]), helper.make_node("Mul", ["h", "sr"], ["hs"]),
             helper.make_node("MatMul", ["hs", "w"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
                          helper.make_tensor_value_info("state", TensorProto.FLOAT, state_dims),
                          helper.make_tensor_value_info("sr", TensorProto.FLOAT, [])], [_w((16, 4))])


@pytest.mark.parametrize("state_dims,given", [([1, 1, 16], (1, 1, 16)), ([2, "N", 16], (2, 1, 16))])
def test_static_inputs_from_npz_are_passed_with_every_call(tmp_path, state_dims, given):
    m = _state_model(state_dims)
    r = np.random.default_rng(10)
    x = r.standard_normal((40, 16)).astype(np.float32)
    state = r.standard_normal(given).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, **{"static:state": state, "static:sr": np.float32(16000.0)})
    src = NumpySource.from_npz(tmp_path / "d.npz", batch_size=32)
    t = calibrate(m, src, _cfg("minmax"))
    ref = (x + state.reshape(-1, 16).mean(0)) * 16000.0  # independent numpy forward
    assert t.amax["hs"] == pytest.approx(float(np.abs(ref).max()), rel=1e-5)


def test_a_fixed_state_passed_as_batched_is_refused_before_running(tmp_path):
    m = _state_model([1, 1, 16])
    x = np.zeros((40, 16), np.float32) + 1
    src = NumpySource({"x": x, "state": np.ones((40, 1, 16), np.float32)}, batch_size=32,
                      static={"sr": np.float32(1.0)})
    with pytest.raises(InputError, match=r"fixed first dim .*'static:<name>'"):
        calibrate(m, src, ORT)
    bad = NumpySource({"x": x}, static={"state": np.ones((1, 2, 16), np.float32), "sr": np.float32(1.0)})
    with pytest.raises(InputError, match=r"static input 'state' has shape \[1, 2, 16\], model expects \[1, 1, 16\]"):
        calibrate(m, bad, ORT)
    with pytest.raises(InputError, match="scalars, not samples on axis 0"):
        NumpySource({"x": x, "sr": np.float32(1.0)})


# -- the table records the choice ----------------------------------------------------------------------------


def test_table_records_the_winning_method_and_old_tables_still_load(tmp_path):
    x = np.random.default_rng(11).standard_normal((64, 16)).astype(np.float32)
    t = calibrate(_mm_model(), NumpySource({"x": x}), ORT)
    assert t.method == "auto" and set(t.info["x"]) >= {"method", "reason", "candidates"}
    back = CalibrationTable.load_json(t.save_json(tmp_path / "t.json"))
    assert back.info == t.info and back.amax == t.amax
    old = t.to_dict()
    del old["tensors"]
    import json

    (tmp_path / "old.json").write_text(json.dumps(old))
    assert CalibrationTable.load_json(tmp_path / "old.json").info == {}


def test_cli_json_prints_the_table_with_the_choices_and_static_inputs_work(tmp_path, capsys):
    import json

    from trtopt.cli.main import main

    path = tmp_path / "m.onnx"
    onnx.save(_state_model([1, 1, 16]), str(path))
    x = np.random.default_rng(12).standard_normal((20, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, sr=np.float32(2.0), **{"static:state": np.ones((1, 1, 16), np.float32)})
    rc = main(["calibrate", str(path), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"),
               "--collector", "onnxruntime", "--static-input", "sr", "--batch-size", "8", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "auto" and d["tensors"]["hs"]["method"] and d["amax"]["hs"] <= np.abs((x + 1) * 2).max()


def test_torch_collector_gives_the_same_auto_table():
    pytest.importorskip("torch")
    x = _silu_data(128)
    x[3, 3] = 40.0
    m = _silu_model()
    ort_t = calibrate(m, NumpySource({"x": x}, batch_size=16), _cfg("auto"))
    torch_t = calibrate(m, NumpySource({"x": x}, batch_size=50),
                        CalibrationConfig(collector="torch", device="cpu"))
    assert set(ort_t.amax) == set(torch_t.amax)
    for k in ort_t.amax:
        assert torch_t.amax[k] == pytest.approx(ort_t.amax[k], rel=2e-3), k
        assert torch_t.info[k]["method"] == ort_t.info[k]["method"], k


def test_softmax_behind_a_nan_guarding_where_is_analytic_too():
    # torch exports BERT attention as Where(IsNaN(softmax), 0, softmax) -> MatMul
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1), helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["pw"]), helper.make_node("MatMul", ["pw", "v"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16])],
               [zero, _w((16, 8), "v")], outputs=(("y", ["N", 16, 8]),))
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
