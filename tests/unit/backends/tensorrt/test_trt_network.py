"""The API-call steps of a build, each on its own, with the real TensorRT-for-RTX parser and builder (no GPU).

A tiny Q/DQ Conv net builds in well under a second on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

trt = pytest.importorskip("tensorrt_rtx")
pytestmark = pytest.mark.tensorrt_rtx

from trtopt.backends.tensorrt.config import BuildConfig, Profile  # noqa: E402
from trtopt.backends.tensorrt.features import tensorrt_features  # noqa: E402
from trtopt.backends.tensorrt.flavour import make_logger  # noqa: E402
from trtopt.backends.tensorrt.graph import graph_info  # noqa: E402
from trtopt.backends.tensorrt.network import (  # noqa: E402
    configure,
    create_network,
    network_io,
    parse_into,
    serialize_network,
)
from trtopt.backends.tensorrt.plan import plan_build  # noqa: E402
from trtopt.backends.tensorrt.profiles import resolve_profiles  # noqa: E402
from trtopt.errors import BuildError  # noqa: E402

PROFILE = Profile("x", (1, 1, 8, 8), (2, 1, 8, 8), (4, 1, 8, 8))


def qdq_conv(op: str = "Conv") -> bytes:
    """x[batch,1,8,8] -> Q/DQ -> Conv(4, 3x3, Q/DQ weights) -> y (``op`` replaces Conv to make a parse fail)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1 / 127, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.full(4, 0.9 / 127, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
             helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], axis=0),
             helper.make_node(op, ["xdq", "wdq"], ["y"], pads=[1, 1, 1, 1], name="/conv",
                              domain="" if op == "Conv" else "no.such")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([] if op == "Conv" else [helper.make_opsetid("no.such", 1)])
    return helper.make_model(g, opset_imports=opsets).SerializeToString()


def _plan(data: bytes, config: BuildConfig):
    info = graph_info(data)
    return plan_build(config, tensorrt_features(trt), info), resolve_profiles(info, config)


def test_the_network_is_created_strongly_typed_and_parsed(tmp_path):
    data = qdq_conv()
    plan, _ = _plan(data, BuildConfig(backend="tensorrt-rtx"))
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = create_network(trt, builder, plan)
    parse_into(trt, logger, network, data, tmp_path / "m.onnx")
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert network_io(network) == [{"name": "x", "mode": "input", "dtype": "FLOAT", "shape": [-1, 1, 8, 8]},
                                   {"name": "y", "mode": "output", "dtype": "FLOAT", "shape": [-1, 4, 8, 8]}]


def test_a_parse_failure_names_the_file_and_the_node(tmp_path):
    data = qdq_conv(op="Foo")
    plan, _ = _plan(qdq_conv(), BuildConfig(backend="tensorrt-rtx"))
    logger = make_logger(trt)
    network = create_network(trt, trt.Builder(logger), plan)
    with pytest.raises(BuildError, match=r"cannot parse bad\.onnx: .*Foo") as exc:
        parse_into(trt, logger, network, data, tmp_path / "bad.onnx")
    assert "\n" not in str(exc.value)


def test_configure_adds_one_profile_for_the_dynamic_inputs(tmp_path):
    config = BuildConfig(backend="tensorrt-rtx", shapes=(PROFILE,), compute_capabilities=("sm86",))
    plan, profiles = _plan(qdq_conv(), config)
    builder = trt.Builder(make_logger(trt))
    trt_config = builder.create_builder_config()
    profile = configure(trt, builder, trt_config, config, plan, profiles)
    assert profile is not None and trt_config.num_optimization_profiles == 1
    assert [tuple(s) for s in profile.get_shape("x")] == [PROFILE.min, PROFILE.opt, PROFILE.max]
    assert trt_config.num_compute_capabilities == 1
    assert configure(trt, builder, builder.create_builder_config(), config, plan, {}) is None


def test_serialize_network_builds_an_engine_and_keeps_the_layer_log(tmp_path):
    config = BuildConfig(backend="tensorrt-rtx", shapes=(PROFILE,))
    plan, profiles = _plan(qdq_conv(), config)
    data, lines, extra = serialize_network(trt, qdq_conv(), tmp_path / "m.onnx", config, plan, profiles,
                                           tensorrt_features(trt))
    assert len(data) > 1000 and all(isinstance(ln, str) for ln in lines)
    assert extra["layers"].startswith("Layers:") and extra["parse_seconds"] >= 0
    assert [t["name"] for t in extra["io"]] == ["x", "y"] and extra["calibrated"] is None
