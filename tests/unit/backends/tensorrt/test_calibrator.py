"""TensorRT 10 implicit INT8 through Polygraphy's Calibrator, tested without TensorRT or a GPU.

The real ``polygraphy.backend.trt.Calibrator`` runs here: TensorRT is replaced by a stand-in module that
only provides the calibrator base classes, and Polygraphy's host -> device copy is replaced by a
recorder (the one call that needs CUDA). What TensorRT would receive (batches, pointers, cache bytes)
and what trtopt does with what TensorRT hands back (cache file, errors) are checked against the
source data computed independently with numpy.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from trtopt.backends.tensorrt.calibrator import (
    CALIBRATOR_BASES,
    CalibrationFeed,
    calibrator_base,
    finish_calibration,
    make_calibrator,
)
from trtopt.calib.source import NumpySource
from trtopt.calib.table import CalibrationTable, hex_to_scale
from trtopt.errors import ConfigError, InputError

SHAPES = {"input": (4, 1, 8, 8)}


def _arrays(n=8, seed=3):
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(n, 1, 8, 8)), "labels": np.arange(n)}  # float64 data, an extra array


def _expected_batches(arrays, batch_size=4):
    """What TensorRT must receive: the source's own order, float32, network inputs only."""
    src = NumpySource(arrays, batch_size=batch_size, seed=0)
    return [b["input"].astype(np.float32) for b in src]


class _Rewindable:
    """A source whose every iter() calls ``make()``."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return self.make()


# -- the data-loader adapter -----------------------------------------------------------------
def test_feed_yields_float32_network_inputs_at_the_opt_shape_and_rewinds():
    arrays = _arrays()
    feed = CalibrationFeed(NumpySource(arrays, batch_size=4, seed=0), SHAPES)
    want = _expected_batches(arrays)
    for _ in range(2):  # Polygraphy's reset() re-iterates; every pass restarts the source
        got = list(feed)
        assert [set(b) for b in got] == [{"input"}] * 2
        for g, w in zip(got, want):
            assert g["input"].dtype == np.float32 and g["input"].flags.c_contiguous
            np.testing.assert_array_equal(g["input"], w)
        assert feed.batches == 2 and feed.error is None


def test_feed_keeps_integer_inputs_and_records_bad_batches_instead_of_raising():
    ids = {"ids": np.arange(12, dtype=np.int64).reshape(3, 4)}
    got = list(CalibrationFeed(NumpySource(ids, batch_size=3, seed=None), {"ids": (3, 4)}))
    assert got[0]["ids"].dtype == np.int64
    np.testing.assert_array_equal(got[0]["ids"], ids["ids"])

    feed = CalibrationFeed(NumpySource(_arrays(n=6), batch_size=4, seed=0), SHAPES)  # 4 then 2 samples
    assert len(list(feed)) == 1  # the short batch ends the pass
    assert isinstance(feed.error, InputError) and "OPT shape (4, 1, 8, 8)" in str(feed.error)

    def broken():
        yield {"input": np.zeros((4, 1, 8, 8))}
        raise RuntimeError("disk gone")

    feed = CalibrationFeed(_Rewindable(broken), SHAPES)
    assert len(list(feed)) == 1 and "disk gone" in str(feed.error)


@pytest.mark.parametrize(("source", "message"), [(_Rewindable(lambda: iter(())), "yielded no batches"),
                                                  (None, "did not accept the calibration cache")])
def test_feed_without_data_is_an_error(source, message):
    feed = CalibrationFeed(source, SHAPES)
    assert list(feed) == [] and message in str(feed.error)


def test_calibrator_class_follows_the_cache_algorithm():
    table = CalibrationTable({"input": 2.0})
    assert calibrator_base(table.to_trt_cache(100300)) == "IInt8EntropyCalibrator2"
    table.method = "minmax"
    assert calibrator_base(table.to_trt_cache(100300)) == "IInt8MinMaxCalibrator"
    assert calibrator_base(None) == "IInt8EntropyCalibrator2"
    with pytest.raises(ConfigError, match="LegacyCalibration"):
        calibrator_base("TRT-100300-LegacyCalibration\ninput: 3c010a14\n")


# -- Polygraphy's Calibrator, for real, with a stand-in TensorRT -------------------------------
@pytest.fixture
def fake_trt(monkeypatch):
    """A ``tensorrt`` module holding only calibrator base classes; Polygraphy's lazy imports are reset after."""
    pytest.importorskip("polygraphy")
    import polygraphy.backend.trt.util as trt_util

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.26"
    trt.__file__ = "<stand-in>"
    for name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "IInt8Calibrator"):
        setattr(trt, name, type(name, (), {"__init__": lambda self: None}))
    _reset_polygraphy_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    copies = []

    def to_device(arr, name, device_buffers, stream=None):  # Polygraphy's host -> device copy
        copies.append((name, np.array(arr)))
        return 1000 + len(copies)

    monkeypatch.setattr(trt_util, "_get_array_on_gpu", to_device)
    trt.copies = copies
    yield trt
    _reset_polygraphy_trt()


def _reset_polygraphy_trt():
    """Forget the ``tensorrt`` module Polygraphy's lazy imports resolved (so the stand-in never leaks)."""
    for name, mod in list(sys.modules.items()):
        lazy = getattr(mod, "trt", None) if name.startswith("polygraphy") else None
        if lazy is not None and type(lazy).__name__ == "LazyModule":
            object.__setattr__(lazy, "module", None)


def _drain(calibrator, names=("input",)):
    ptrs = []
    while (p := calibrator.get_batch(list(names))) is not None:
        ptrs.append(p)
    return ptrs


def test_calibrating_from_data_feeds_every_batch_and_saves_the_cache_trtopt_side(fake_trt, tmp_path):
    arrays = _arrays()
    calibrator = make_calibrator(fake_trt, CalibrationFeed(NumpySource(arrays, batch_size=4, seed=0), SHAPES), None)
    assert isinstance(calibrator, fake_trt.IInt8EntropyCalibrator2)
    assert calibrator.get_batch_size() == 1  # explicit batch: the batch is in the tensor shapes
    assert calibrator.read_calibration_cache() is None  # no cache: TensorRT calibrates
    ptrs = _drain(calibrator)
    assert ptrs == [[1001], [1002]]
    want = _expected_batches(arrays)
    assert [n for n, _ in fake_trt.copies] == ["input", "input"]
    for (_n, got), w in zip(fake_trt.copies, want):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, w)
    made = b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\n"
    calibrator.write_calibration_cache(memoryview(made))  # what TensorRT hands back after calibrating
    out = tmp_path / "m.calib.cache"
    info = finish_calibration(calibrator, out)
    assert out.read_bytes() == made
    assert CalibrationTable.read_trt_cache(out).amax["input"] == pytest.approx(hex_to_scale("3c010a14") * 127)
    assert info == {"calibrator": "polygraphy Calibrator(IInt8EntropyCalibrator2)", "batches": 2}


@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_a_trtopt_table_reaches_tensorrt_as_the_cache_and_no_data_is_read(fake_trt, tmp_path, method):
    text = CalibrationTable({"input": 2.0, "logits": 5.0}, method=method).to_trt_cache(100300)
    feed = CalibrationFeed(None, SHAPES)
    calibrator = make_calibrator(fake_trt, feed, text)
    assert isinstance(calibrator, getattr(fake_trt, CALIBRATOR_BASES[text.split("\n")[0].split("-")[2]]))
    assert calibrator.read_calibration_cache() == text.encode("ascii")
    assert calibrator.read_calibration_cache() == text.encode("ascii")  # TensorRT may ask more than once
    out = tmp_path / "m.calib.cache"
    assert finish_calibration(calibrator, out)["batches"] == 0
    assert not out.exists() and fake_trt.copies == []  # scales came from the cache, nothing copied or rewritten


def test_a_bad_batch_fails_the_build_with_its_reason_and_writes_no_cache(fake_trt, tmp_path):
    src = NumpySource(_arrays(n=6), batch_size=4, seed=0)  # second batch has 2 samples, OPT wants 4
    calibrator = make_calibrator(fake_trt, CalibrationFeed(src, SHAPES), None)
    assert len(_drain(calibrator)) == 1  # TensorRT sees "no more data" ...
    calibrator.write_calibration_cache(memoryview(b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\n"))
    out = tmp_path / "m.calib.cache"
    with pytest.raises(InputError, match=r"has shape \(2, 1, 8, 8\).*OPT shape"):  # ... trtopt says why
        finish_calibration(calibrator, out)
    assert not out.exists()


def test_an_empty_source_is_an_error_not_an_uncalibrated_engine(fake_trt, tmp_path):
    calibrator = make_calibrator(fake_trt, CalibrationFeed(_Rewindable(lambda: iter(())), SHAPES), None)
    assert _drain(calibrator) == []
    with pytest.raises(InputError, match="yielded no batches"):
        finish_calibration(calibrator, tmp_path / "c.cache")


def test_loader_attaches_the_calibrator_and_the_calibration_profile(fake_trt):
    from trtopt.backends.tensorrt.network import attach_calibrator

    trt_config = SimpleNamespace(int8_calibrator=None, profiles=[])
    trt_config.set_calibration_profile = trt_config.profiles.append
    text = CalibrationTable({"input": 2.0}, method="minmax").to_trt_cache(100300)
    calib = attach_calibrator(fake_trt, trt_config, "PROFILE", {"cache_text": text, "input_shapes": SHAPES})
    assert trt_config.int8_calibrator is calib and trt_config.profiles == ["PROFILE"]
    assert isinstance(calib, fake_trt.IInt8MinMaxCalibrator)
    assert calib.trtopt_feed.input_shapes == SHAPES
    finish_calibration(calib, None)


def test_polygraphy_set_for_rtx_is_refused(fake_trt, monkeypatch):
    from polygraphy import config

    monkeypatch.setattr(config, "USE_TENSORRT_RTX", True)
    with pytest.raises(ConfigError, match="POLYGRAPHY_USE_TENSORRT_RTX"):
        make_calibrator(fake_trt, CalibrationFeed(None, SHAPES), None)


def test_missing_polygraphy_names_the_extra(monkeypatch):
    from trtopt.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "polygraphy", None)  # import polygraphy -> ImportError
    with pytest.raises(MissingDependencyError, match=r"\[tensorrt\]"):  # trtopt[tensorrt] or -e ".[tensorrt]"
        make_calibrator(types.ModuleType("tensorrt"), CalibrationFeed(None, SHAPES), None)
