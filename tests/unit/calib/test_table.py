"""Calibration tables: TensorRT cache hex encoding, round trips, damaged / foreign caches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _helpers.calib_graphs import ORT, matmul_model
from trtopt.calib import (
    CalibrationTable,
    NumpySource,
    calibrate,
    hex_to_scale,
    scale_to_hex,
)
from trtopt.errors import IncompatibleArtifactError, InputError


def test_hex_encoding_of_known_values():
    assert scale_to_hex(1.0) == "3f800000"  # amax 127
    assert scale_to_hex(0.1) == "3dcccccd"  # float32(0.1) bits
    assert scale_to_hex(2.0**-10) == "3a800000"
    assert hex_to_scale("3f800000") == 1.0
    t = CalibrationTable({"x": 127.0, "y": 12.7})
    lines = t.to_trt_cache(100300).splitlines()
    assert lines == ["TRT-100300-EntropyCalibration2", "x: 3f800000", "y: 3dcccccd"]
    assert CalibrationTable({"x": 1.0}, method="minmax").to_trt_cache(8600).startswith("TRT-8600-MinMaxCalibration\n")


def test_trt_cache_round_trip(tmp_path):
    t = CalibrationTable({"input": 1.0, "/layer1/Relu_output_0": 3.25, "a:b": 0.5}, method="entropy")
    path = t.write_trt_cache(tmp_path / "c.cache", trt_version=100300)
    back = CalibrationTable.read_trt_cache(path, tensor_names=["input", "/layer1/Relu_output_0", "a:b"])
    assert back.meta == {"trt_version": 100300, "algorithm": "EntropyCalibration2"}
    assert back.method == "entropy"
    for k, v in t.amax.items():
        assert back.amax[k] == pytest.approx(v, rel=1e-6)


def test_json_round_trip_keeps_provenance(tmp_path):
    t = CalibrationTable({"x": 2.5}, method="percentile", data_hash="d" * 64, model_hash="m" * 64, num_samples=7,
                         meta={"percentile": 99.9})
    p = t.save_json(tmp_path / "sub" / "t.json")
    d = json.loads(p.read_text())
    assert d["schema_version"] == 1 and d["amax"] == {"x": 2.5} and d["model_hash"] == "m" * 64
    back = CalibrationTable.load_json(p)
    assert (back.amax, back.method, back.data_hash, back.num_samples) == (t.amax, "percentile", "d" * 64, 7)


@pytest.mark.parametrize("content", [
    b"", b"\x89PNG\x00\x01binary", b"TRT-100300-EntropyCalibration2\nx: 3f80\n",
    b"not a cache\nx: 3f800000\n", b"TRT-100300-EntropyCalibration2\nx 3f800000\n",
    b"TRT-100300-EntropyCalibration2\nx: 7fc00000\n",  # NaN scale
])
def test_damaged_cache_is_a_clear_input_error(tmp_path, content):
    p = tmp_path / "bad.cache"
    p.write_bytes(content)
    with pytest.raises(InputError, match="bad.cache"):
        CalibrationTable.read_trt_cache(p)


def test_cache_for_another_model_is_rejected(tmp_path):
    p = CalibrationTable({"other_net/conv_out": 1.0, "(Unnamed Layer* 3) [Constant]_output": 1.0}).write_trt_cache(
        tmp_path / "c.cache")
    with pytest.raises(IncompatibleArtifactError, match="does not belong to this model"):
        CalibrationTable.read_trt_cache(p, tensor_names=["input", "conv_out"])
    # TensorRT-internal names alone are tolerated
    CalibrationTable.read_trt_cache(p, tensor_names=["other_net/conv_out"])


def test_missing_or_corrupt_json_table(tmp_path):
    with pytest.raises(InputError, match="not found"):
        CalibrationTable.load_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{truncated")
    with pytest.raises(InputError, match="invalid JSON"):
        CalibrationTable.load_json(bad)
    bad.write_text(json.dumps({"schema_version": 1, "amax": {"x": -1}}))
    with pytest.raises(InputError, match="invalid amax"):
        CalibrationTable.load_json(bad)
    bad.write_text(json.dumps({"foo": 1}))
    with pytest.raises(InputError, match="not a trtopt calibration table"):
        CalibrationTable.load_json(bad)


def test_table_records_the_winning_method_and_old_tables_still_load(tmp_path):
    x = np.random.default_rng(11).standard_normal((64, 16)).astype(np.float32)
    t = calibrate(matmul_model(), NumpySource({"x": x}), ORT)
    assert t.method == "auto" and set(t.info["x"]) >= {"method", "reason", "candidates"}
    back = CalibrationTable.load_json(t.save_json(tmp_path / "t.json"))
    assert back.info == t.info and back.amax == t.amax
    old = t.to_dict()
    del old["tensors"]
    import json

    (tmp_path / "old.json").write_text(json.dumps(old))
    assert CalibrationTable.load_json(tmp_path / "old.json").info == {}
