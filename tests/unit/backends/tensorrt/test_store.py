"""CPU tests of the engine store, manifests, compatibility checks and calibration-cache handoff."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from trtopt.backends.tensorrt.calibrator import cache_text_for, check_batch
from trtopt.backends.tensorrt.config import BuildConfig
from trtopt.backends.tensorrt.features import Features
from trtopt.backends.tensorrt.graph import GraphInfo
from trtopt.backends.tensorrt.manifest import (
    SCHEMA,
    check_manifest,
    load_manifest,
    make_manifest,
    require_compatible,
)
from trtopt.backends.tensorrt.plan import plan_build
from trtopt.backends.tensorrt.runner import numpy_dtype
from trtopt.backends.tensorrt.store import EngineStore, check_engine_file, manifest_path_for
from trtopt.calib.table import CalibrationTable
from trtopt.errors import IncompatibleArtifactError, InputError

ORIN = {"name": "Orin", "compute_capability": "8.7"}
ENV = {"tensorrt": {"version": "10.3.0.26", "nv_tensorrt_version": 100300}, "cuda": {"torch_cuda": "12.6"},
       "gpu": {**ORIN, "sm_count": 16, "total_memory_mib": 62000, "uuid": "GPU-1"},
       "platform": {"os": "Linux", "arch": "aarch64"}}


def _manifest(precision="int8", **cfg):
    config = BuildConfig(precision=precision, sparsity=True, **cfg)
    plan = plan_build(config, Features(weak_typing=True), GraphInfo(inputs={"input": (-1, 1, 8, 8)}),
                      has_calibration=True)
    return make_manifest("k" * 64, ENV, {"options": config.to_dict(), "plan": plan.to_dict()},
                         engine={"file": "m.engine", "sha256": "0" * 64, "bytes": 123},
                         onnx={"path": "m.onnx", "sha256": "1" * 64, "has_qdq": False, "has_fp16": False},
                         profiles={"input": {"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [32, 1, 8, 8]}},
                         io=[{"name": "input", "mode": "input", "dtype": "FLOAT", "shape": [-1, 1, 8, 8]}],
                         calibration={"sha256": "2" * 64, "header": "TRT-100300-EntropyCalibration2"},
                         sparsity={"eligible": ["c1", "c2"], "picked": ["c2"],
                                   "summary": "2 layers eligible, 1 picked"})


def test_manifest_contents_use_enum_names():
    m = _manifest()
    assert m["schema"] == SCHEMA and m["key"] == "k" * 64
    assert m["tensorrt"]["version"] == "10.3.0.26" and m["gpu"]["compute_capability"] == "8.7"
    assert m["build"]["plan"]["builder_flags"] == ["INT8", "SPARSE_WEIGHTS"]
    assert m["build"]["plan"]["network_flags"] == [] and m["build"]["plan"]["cleared_flags"] == ["TF32"]
    assert m["build"]["plan"]["calibrator"] == "EntropyCalibration2"
    assert m["build"]["options"]["precision"] == "int8" and m["build"]["options"]["sparsity"] is True
    for section in ("engine", "onnx", "profiles", "io", "calibration", "sparsity", "platform", "cuda", "created"):
        assert section in m
    json.dumps(m)  # serialisable


def test_compatible_manifest_has_no_problems():
    assert check_manifest(_manifest(), "10.3.0.26", ORIN, arch="aarch64") == []


def test_mismatching_trt_gpu_and_arch_are_reported():
    probs = check_manifest(_manifest(), "10.4.0.26", {"name": "A100", "compute_capability": "8.0"}, arch="x86_64")
    assert len(probs) == 3
    assert "built with TensorRT 10.3.0.26, running 10.4.0.26" in probs[0]
    assert "Orin" in probs[1] and "A100" in probs[1]
    with pytest.raises(IncompatibleArtifactError, match="cannot run here") as exc:
        require_compatible(_manifest(), "11.4.0.106", ORIN, "engine m.engine", arch="aarch64")
    assert "\n" not in str(exc.value)


def test_version_and_hardware_compatible_builds_are_honoured():
    vc = _manifest(version_compatible=True)
    assert check_manifest(vc, "10.7.0.23", ORIN, arch="aarch64") == []  # newer runtime: fine
    assert check_manifest(vc, "11.4.0.106", ORIN, arch="aarch64") == []  # 10 -> 11 is supported
    assert check_manifest(vc, "10.0.1.6", ORIN, arch="aarch64")  # older runtime: not fine
    amp = _manifest(hardware_compat="ampere_plus")
    assert check_manifest(amp, "10.3.0.26", {"name": "A10", "compute_capability": "8.6"}, arch="aarch64") == []
    assert check_manifest(amp, "10.3.0.26", {"name": "T4", "compute_capability": "7.5"}, arch="aarch64")


def test_store_roundtrip_lookup_and_key_mismatch(tmp_path):
    store = EngineStore(tmp_path / "engines")
    entry = store.entry("ab" * 32, "digits cnn", "int8+fp16", sparsity=True)
    assert entry.engine.name == "digits_cnn.int8-fp16.sparse.abababababababab.engine"
    assert entry.manifest == manifest_path_for(entry.engine)
    assert store.lookup(entry, "ab" * 32) is None  # nothing stored yet
    m = _manifest()
    m["key"] = "ab" * 32
    store.save(entry, b"\x00plan" * 100, m)
    assert store.lookup(entry, "ab" * 32)["key"] == "ab" * 32
    assert store.lookup(entry, "cd" * 32) is None
    assert load_manifest(entry.manifest)["engine"]["bytes"] == 123
    assert not list(entry.engine.parent.glob("*.tmp"))  # atomic writes leave no temporaries
    entry.manifest.unlink()  # an engine without manifest is an interrupted build
    assert store.lookup(entry, "ab" * 32) is None


def test_store_lock_serializes_same_key(tmp_path):
    store = EngineStore(tmp_path)
    order = []

    def worker(tag):
        with store.lock("ef" * 32):
            order.append(f"{tag}-in")
            order.append(f"{tag}-out")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(order[i].split("-")[0] == order[i + 1].split("-")[0] for i in range(0, 8, 2))


@pytest.mark.parametrize(("content", "name", "msg"), [
    (b"", "m.engine", "0 bytes"),
    (b'{"schema": "trtopt.engine/1", "key": "x"}' + b" " * 100, "m.engine", "text file"),
    (b"\x08\x07\x12\x07pytorch\x1a\x032.1:onnx" + b"\x00" * 100, "m.engine", "ONNX model"),
    (b"\x00" * 100, "model.onnx", "ONNX model"),
])
def test_non_engine_files_are_clear_errors(tmp_path, content, name, msg):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=msg) as exc:
        check_engine_file(p)
    assert "\n" not in str(exc.value)


def test_missing_engine_and_bad_manifest(tmp_path):
    with pytest.raises(InputError, match="not found"):
        check_engine_file(tmp_path / "nope.engine")
    (tmp_path / "m.json").write_text('{"schema": "other"}')
    with pytest.raises(InputError, match="not a trtopt engine manifest"):
        load_manifest(tmp_path / "m.json")


def test_binary_engine_bytes_pass_the_sniff(tmp_path):
    p = tmp_path / "m.engine"
    p.write_bytes(bytes(range(256)) * 4)
    assert check_engine_file(p)[:4] == bytes(range(4))


# -- calibration cache handoff -------------------------------------------------------------
def test_table_json_becomes_trt_cache_for_running_version(tmp_path):
    table = CalibrationTable({"input": 1.0, "/features/0/Conv_output_0": 2.54}, method="entropy")
    table.save_json(tmp_path / "t.json")
    text = cache_text_for(tmp_path / "t.json", 100300, {"input", "/features/0/Conv_output_0", "logits"})
    lines = text.splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    (tmp_path / "c.cache").write_text(text)
    back = CalibrationTable.read_trt_cache(tmp_path / "c.cache")
    assert back.amax["input"] == pytest.approx(1.0) and back.meta["trt_version"] == 100300
    assert "/features/0/Conv_output_0: 3ca3d70a" in lines  # 2.54/127 = 0.02 as float32 bits


def test_old_trt_cache_header_is_rewritten(tmp_path):
    (tmp_path / "c.cache").write_text("TRT-8601-EntropyCalibration2\ninput: 3c010204\n")
    text = cache_text_for(tmp_path / "c.cache", 100300)
    assert text.splitlines() == ["TRT-100300-EntropyCalibration2", "input: 3c010204"]


def test_cache_for_another_model_is_refused(tmp_path):
    (tmp_path / "c.cache").write_text("TRT-100300-EntropyCalibration2\nother_tensor: 3c010204\n")
    with pytest.raises(IncompatibleArtifactError, match="does not belong"):
        cache_text_for(tmp_path / "c.cache", 100300, {"input", "logits"})


def test_calibration_batch_must_match_opt_shape():
    check_batch({"input": np.zeros((8, 1, 8, 8))}, ["input"], {"input": (8, 1, 8, 8)})
    with pytest.raises(InputError, match="OPT shape"):
        check_batch({"input": np.zeros((5, 1, 8, 8))}, ["input"], {"input": (8, 1, 8, 8)})
    with pytest.raises(InputError, match="lacks"):
        check_batch({}, ["input"], {})


def test_engine_dtype_names_map_to_numpy():
    assert numpy_dtype("HALF", "x") == np.float16 and numpy_dtype("FLOAT", "x") == np.float32
    with pytest.raises(InputError, match="BF16"):
        numpy_dtype("BF16", "x")


def test_flavour_mismatch_both_ways_names_the_extra():
    from trtopt.backends.tensorrt.manifest import flavour_mismatch

    trt10 = _manifest()  # no flavour recorded: TensorRT 10/11
    err = flavour_mismatch(trt10, "tensorrt-rtx", "1.7.1.116", "engine m.engine")
    assert isinstance(err, IncompatibleArtifactError)
    assert "built by TensorRT 10.3.0.26" in str(err) and "TensorRT for RTX 1.7.1.116" in str(err)
    assert "[tensorrt]" in str(err)  # trtopt[tensorrt] or -e ".[tensorrt]", as installed
    rtx = {**trt10, "tensorrt": {"version": "1.7.1.116", "flavour": "tensorrt-rtx"}}
    err = flavour_mismatch(rtx, "tensorrt", "10.3.0.26", "engine m.engine")
    assert "built by TensorRT for RTX 1.7.1.116" in str(err) and "[tensorrt-rtx]" in str(err)
    assert flavour_mismatch(rtx, "tensorrt-rtx", "1.7.1.116", "e") is None


def test_rtx_manifest_checks_the_gpu_against_its_targets():
    m = {**_manifest(), "tensorrt": {"version": "1.7.1.116", "flavour": "tensorrt-rtx"},
         "gpu": {"name": None, "compute_capability": None, "targets": ["SM86", "SM89"]},
         "platform": {"arch": "x86_64"}}
    assert check_manifest(m, "1.7.1.116", {"name": "RTX 4090", "compute_capability": "8.9"}, arch="x86_64") == []
    probs = check_manifest(m, "1.7.1.116", {"name": "A100", "compute_capability": "8.0"}, arch="x86_64")
    assert probs == ["built for SM86, SM89, this GPU is SM80"]


def test_interrupted_manifest_write_removes_the_engine(tmp_path, monkeypatch):
    import trtopt.backends.tensorrt.store as store_mod

    store = EngineStore(tmp_path)
    entry = store.entry("a" * 64, "m", "fp16")

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        store.save(entry, b"x" * 100, {"schema": SCHEMA, "key": "a" * 64})
    assert not entry.engine.exists() and not entry.manifest.exists()
