"""Calibration sources: dynamic batch dims in every spelling, static (per-call) inputs from .npz."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from _helpers.calib_graphs import ORT, float_model, ort_config, state_model, weight
from trtopt.calib import NumpySource, calibrate
from trtopt.errors import InputError


@pytest.mark.parametrize("dim", [-1, 0, None, "N"])
def test_batch_dim_stored_as_minus_one_zero_or_unnamed_is_dynamic(dim):
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 16])
    if dim is None:  # a dim with neither value nor name
        vi.type.tensor_type.shape.dim[0].Clear()
    m = float_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi], [weight((16, 4))])
    x = np.random.default_rng(9).standard_normal((40, 16)).astype(np.float32)
    t = calibrate(m, NumpySource({"x": x}, batch_size=16), ORT)
    assert len(t) == 1 and t.amax["x"] <= np.abs(x).max()


@pytest.mark.parametrize("state_dims,given", [([1, 1, 16], (1, 1, 16)), ([2, "N", 16], (2, 1, 16))])
def test_static_inputs_from_npz_are_passed_with_every_call(tmp_path, state_dims, given):
    m = state_model(state_dims)
    r = np.random.default_rng(10)
    x = r.standard_normal((40, 16)).astype(np.float32)
    state = r.standard_normal(given).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, **{"static:state": state, "static:sr": np.float32(16000.0)})
    src = NumpySource.from_npz(tmp_path / "d.npz", batch_size=32)
    t = calibrate(m, src, ort_config("minmax"))
    ref = (x + state.reshape(-1, 16).mean(0)) * 16000.0  # independent numpy forward
    assert t.amax["hs"] == pytest.approx(float(np.abs(ref).max()), rel=1e-5)


def test_a_fixed_state_passed_as_batched_is_refused_before_running(tmp_path):
    m = state_model([1, 1, 16])
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


@pytest.mark.parametrize("content,words", [
    (lambda p: np.save(p, np.zeros(3)), "not a .npz archive"),
    (lambda p: p.write_bytes(b"garbage"), "not a readable .npz"),
    (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "not a readable .npz"),
    (lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object)), "pickled"),
])
def test_calibration_npz_errors_in_words(tmp_path, content, words):
    from trtopt.calib import NumpySource

    p = tmp_path / "calib.npz"
    content(p)
    if not p.exists():  # np.save appends .npy
        (tmp_path / "calib.npz.npy").rename(p)
    with pytest.raises(InputError) as err:
        NumpySource.from_npz(p)
    msg = str(err.value)
    assert "calib.npz" in msg and words in msg and "Error" not in msg  # no exception type names


def test_calibration_npz_static_and_labels_still_work(tmp_path):
    from trtopt.calib import NumpySource

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(6), **{"static:h": np.zeros((1, 3), np.float32)})
    src = NumpySource.from_npz(tmp_path / "d.npz", batch_size=4, seed=None)
    assert set(src.arrays) == {"x"} and set(src.static_inputs) == {"h"}
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in src]), x)
