"""The describe step: a real TensorRT-for-RTX engine turned into its manifest, without deserializing it."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

trt = pytest.importorskip("tensorrt_rtx")
pytestmark = pytest.mark.tensorrt_rtx

from trtopt.backends.tensorrt.builder import calibration_inputs, calibration_shapes, log_profile_sources  # noqa: E402
from trtopt.backends.tensorrt.config import BuildConfig, Profile  # noqa: E402
from trtopt.backends.tensorrt.describe import (  # noqa: E402
    RTX_SPARSITY_UNKNOWN,
    BuiltEngine,
    describe_build,
    timing_cache_info,
)
from trtopt.backends.tensorrt.features import tensorrt_features  # noqa: E402
from trtopt.backends.tensorrt.graph import GraphInfo, read_model  # noqa: E402
from trtopt.backends.tensorrt.network import serialize_network  # noqa: E402
from trtopt.backends.tensorrt.plan import plan_build  # noqa: E402
from trtopt.backends.tensorrt.profiles import resolve_profiles_with_sources  # noqa: E402
from trtopt.fileio import sha256_bytes  # noqa: E402


def _qdq_gemm(path):
    """x[batch,16] -> Q/DQ -> Gemm(8, Q/DQ weights) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1 / 127, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.full(8, 0.9 / 127, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(8, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
             helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], axis=0),
             helper.make_node("Gemm", ["xdq", "wdq"], ["y"], transB=1, name="/fc")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], inits)
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def test_an_rtx_build_is_described_from_its_build_log(tmp_path):
    model = read_model(_qdq_gemm(tmp_path / "fc.onnx"))
    config = BuildConfig(backend="tensorrt-rtx", precision="int8", default_batch=(1, 2, 4))
    plan = plan_build(config, tensorrt_features(trt), model.info)
    resolved = resolve_profiles_with_sources(model.info, config)
    t0 = time.perf_counter()
    data, lines, extra = serialize_network(trt, model.parser_bytes, model.path, config, plan, resolved[0],
                                           tensorrt_features(trt))
    built = BuiltEngine(data, lines, extra, time.perf_counter() - t0)
    env = {"tensorrt": {"version": trt.__version__}, "gpu": {"targets": list(plan.targets)}}
    m = describe_build(trt, built, tmp_path / "fc.engine", "k" * 64, env, model, config, "auto", plan, resolved,
                       {}, None)
    assert m["engine"] == {"file": "fc.engine", "sha256": sha256_bytes(data), "bytes": len(data)}
    assert m["onnx"]["sha256"] == sha256_bytes(model.file_bytes) and m["onnx"]["has_qdq"]
    assert m["profiles"]["x"] == {"min": [1, 16], "opt": [2, 16], "max": [4, 16], "source": "default batch [1, 2, 4]"}
    assert m["build"]["precision"] == {"requested": "auto", "built": "int8", "graph": "Q/DQ INT8, FP32 elsewhere"}
    assert m["sparsity"]["summary"] == f"unknown ({RTX_SPARSITY_UNKNOWN})"
    assert m["compiled"]["summary"] and m["calibration"] is None and m["timing_cache"] is None
    assert [t["name"] for t in m["io"]] == ["x", "y"]


def test_timing_cache_info_hashes_an_existing_file(tmp_path):
    assert timing_cache_info("") is None and timing_cache_info(str(tmp_path / "none.cache")) is None
    (tmp_path / "t.cache").write_bytes(b"abc")
    assert timing_cache_info(str(tmp_path / "t.cache")) == {"path": str(tmp_path / "t.cache"),
                                                            "sha256": sha256_bytes(b"abc")}


def test_calibration_steps_without_calibration_and_at_the_opt_shape():
    assert calibration_inputs(None, None, 0, b"") == {}
    source = [{"x": np.zeros((2, 16), np.float32)}]
    assert calibration_inputs(None, source, 100300, b"") == {"source": source, "cache_text": None, "cache_out": None}
    info = GraphInfo(inputs={"x": (-1, 16), "scale": (1,)})
    assert calibration_shapes(info, {"x": ((1, 16), (8, 16), (32, 16))}) == {"x": (8, 16), "scale": (1,)}


def test_profiles_the_caller_did_not_give_are_logged_with_their_source(caplog):
    cfg = BuildConfig(shapes=(Profile.static("ids", (2, 8)),), default_batch=(1, 2, 4))
    profiles = {"ids": ((2, 8),) * 3, "x": ((1, 16), (2, 16), (4, 16)), "mask": ((2, 8),) * 3}
    sources = {"ids": "--shapes", "x": "default batch [1, 2, 4]", "mask": "dims seq of ids"}
    with caplog.at_level(logging.INFO, logger="trtopt.backends.tensorrt.builder"):
        log_profile_sources(profiles, sources, cfg)
    text = caplog.text
    assert "'x' made from the default batch [1, 2, 4]" in text
    assert "'mask' derived from the named dims seq of ids" in text
    assert "'ids'" not in text
