"""CPU tests of the TensorRT build planning: features, flags per precision, profiles, cache keys."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.tensorrt.config import BuildConfig, Profile
from trtopt.backends.tensorrt.features import Features, detect_features, nv_tensorrt_version
from trtopt.backends.tensorrt.graph import GraphInfo, graph_info
from trtopt.backends.tensorrt.plan import cache_key, plan_build
from trtopt.backends.tensorrt.profiles import parse_shapes, resolve_profiles
from trtopt.errors import ConfigError

TRT10 = Features(weak_typing=True, same_compute_capability=False)  # 10.3
TRT11 = Features(weak_typing=False, same_compute_capability=True)  # 11.x: strongly typed only
FP32 = GraphInfo(inputs={"input": (-1, 1, 8, 8)})
QDQ = GraphInfo(inputs={"input": (-1, 1, 8, 8)}, has_qdq=True)
QDQ16 = GraphInfo(inputs={"input": (-1, 1, 8, 8)}, has_qdq=True, has_fp16=True)
FP16 = GraphInfo(inputs={"input": (-1, 1, 8, 8)}, has_fp16=True)


def _plan(precision, features, info, calib=False, **kw):
    return plan_build(BuildConfig(precision=precision, **kw), features, info, has_calibration=calib)


# -- features ------------------------------------------------------------------------------
def test_detect_features_uses_names_not_versions():
    ten = {"BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2", "IBuilderConfig.int8_calibrator"}
    assert detect_features(ten.__contains__) == Features(weak_typing=True, same_compute_capability=False)
    eleven = {"HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"}
    assert detect_features(eleven.__contains__) == Features(weak_typing=False, same_compute_capability=True)
    # a partial set (calibrators gone, flags left) is not weak typing
    assert not detect_features({"BuilderFlag.FP16", "BuilderFlag.INT8"}.__contains__).weak_typing


@pytest.mark.parametrize(("version", "nv"), [("10.3.0.26", 100300), ("11.4.0.106", 110400), ("8.6.1", 8601),
                                             ("10.16.1.11", 101601)])
def test_nv_tensorrt_version(version, nv):
    assert nv_tensorrt_version(version) == nv


def test_nv_tensorrt_version_rejects_garbage():
    with pytest.raises(ConfigError, match="not a TensorRT version"):
        nv_tensorrt_version("abc")


# -- flag plans ----------------------------------------------------------------------------
# (precision, features, graph, calibration) -> (strongly typed, builder flags, calibrator)
PLANS = [
    ("fp32", TRT10, FP32, False, True, (), False),
    ("fp32", TRT11, FP32, False, True, (), False),
    ("fp16", TRT10, FP32, False, False, ("FP16",), False),
    ("fp16", TRT10, FP16, False, True, (), False),
    ("fp16", TRT11, FP16, False, True, (), False),
    ("int8", TRT10, FP32, True, False, ("INT8",), True),
    ("int8", TRT10, QDQ, False, True, (), False),
    ("int8", TRT11, QDQ, False, True, (), False),
    ("int8+fp16", TRT10, FP32, True, False, ("INT8", "FP16"), True),
    ("int8+fp16", TRT10, QDQ, False, False, ("INT8", "FP16"), False),
    ("int8+fp16", TRT10, QDQ16, False, True, (), False),
    ("int8+fp16", TRT11, QDQ16, False, True, (), False),
    ("best", TRT10, FP32, False, False, ("FP16",), False),
    ("best", TRT10, FP32, True, False, ("FP16", "INT8"), True),
    ("best", TRT10, QDQ, False, False, ("FP16", "INT8"), False),
    ("best", TRT11, FP32, False, True, (), False),
]


@pytest.mark.parametrize(("precision", "features", "info", "calib", "strong", "flags", "calibrator"), PLANS)
def test_flag_plan_per_precision_and_feature_set(precision, features, info, calib, strong, flags, calibrator):
    plan = _plan(precision, features, info, calib)
    assert plan.strongly_typed is strong
    assert plan.network_flags == (("STRONGLY_TYPED",) if strong else ())
    assert plan.builder_flags == flags
    assert plan.calibrator is calibrator
    assert plan.cleared_flags == ("TF32",)  # FP32 math is real FP32 unless TF32 is asked for


def test_weak_typed_flags_never_planned_without_weak_typing():
    for precision in ("fp32", "fp16", "int8", "int8+fp16", "best"):
        for info in (FP32, QDQ, QDQ16, FP16):
            for calib in (False, True):
                try:
                    plan = _plan(precision, TRT11, info, calib, sparsity=True)
                except ConfigError:
                    continue
                assert not {"FP16", "INT8"} & set(plan.builder_flags), (precision, info)
                assert plan.strongly_typed and not plan.calibrator


@pytest.mark.parametrize(("info", "holds"), [(FP32, "fp32"), (FP16, "fp16"), (QDQ, "int8"), (QDQ16, "int8+fp16")])
def test_default_precision_is_the_graphs_own_types_on_every_feature_set(info, holds):
    assert BuildConfig().precision == "auto"
    for features in (TRT10, TRT11, Features(weak_typing=False, rtx=True)):
        plan = plan_build(BuildConfig(), features, info)  # no --precision: nothing to refuse, no builder flag
        assert plan.strongly_typed and plan.builder_flags == () and not plan.calibrator, (features, info)
        explicit = plan_build(BuildConfig(precision=holds), features, info)
        assert (plan.strongly_typed, plan.builder_flags) == (explicit.strongly_typed, explicit.builder_flags)


def test_graph_precision_names_what_the_graph_holds():
    from trtopt.backends.tensorrt.config import graph_precision

    assert graph_precision(True, False) == ("int8", "Q/DQ INT8, FP32 elsewhere")
    assert graph_precision(True, True)[0] == "int8+fp16" and graph_precision(False, True)[0] == "fp16"
    assert graph_precision(False, False)[0] == "fp32"


def test_explicit_fp32_on_a_qdq_graph_says_what_it_holds_and_to_leave_precision_out():
    with pytest.raises(ConfigError, match=r"holds Q/DQ INT8, FP32 elsewhere.*leave --precision out"):
        _plan("fp32", TRT11, QDQ)


def test_int8_on_strongly_typed_trt_without_qdq_suggests_quantize():
    with pytest.raises(ConfigError, match=r"trtopt quantize") as exc:
        _plan("int8", TRT11, FP32, calib=True)
    assert "Q/DQ" in str(exc.value) and "\n" not in str(exc.value)


def test_fp16_on_strongly_typed_trt_needs_an_fp16_graph():
    with pytest.raises(ConfigError, match=r"trtopt quantize MODEL.onnx --fp16"):
        _plan("fp16", TRT11, FP32)


def test_implicit_int8_without_calibration_is_a_clear_error():
    with pytest.raises(ConfigError, match="--calib"):
        _plan("int8", TRT10, FP32, calib=False)


def test_fp32_on_a_typed_graph_is_refused_not_silently_rewritten():
    with pytest.raises(ConfigError, match="holds Q/DQ INT8"):
        _plan("fp32", TRT10, QDQ)
    with pytest.raises(ConfigError, match="holds FP16 tensors"):
        _plan("fp32", TRT10, FP16)


def test_tf32_opt_in_and_sparsity_and_compat_flags():
    plan = _plan("fp32", TRT11, FP32, tf32=True, sparsity=True, version_compatible=True, exclude_lean_runtime=True,
                 hardware_compat="ampere_plus")
    assert plan.cleared_flags == ()
    assert plan.builder_flags == ("SPARSE_WEIGHTS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")
    assert plan.hardware_compat == "AMPERE_PLUS" and plan.profiling_verbosity == "DETAILED"
    assert _plan("fp16", TRT10, FP32, sparsity=True).builder_flags == ("FP16", "SPARSE_WEIGHTS")


def test_same_compute_capability_needs_trt_10_9():
    with pytest.raises(ConfigError, match="10.9"):
        _plan("fp32", TRT10, FP32, hardware_compat="same_compute_capability")
    assert _plan("fp32", TRT11, FP32, hardware_compat="same_compute_capability").hardware_compat == \
        "SAME_COMPUTE_CAPABILITY"


def test_dla_plans():
    assert _plan("fp16", TRT10, FP32, dla_core=0).builder_flags == ("FP16", "GPU_FALLBACK")
    with pytest.raises(ConfigError, match="TensorRT 10.x"):
        _plan("fp16", TRT11, FP16, dla_core=0)
    with pytest.raises(ConfigError, match="DLA needs"):
        _plan("fp32", TRT10, FP32, dla_core=0)


def test_build_config_validation():
    with pytest.raises(ConfigError, match="precision"):
        BuildConfig(precision="int4")
    with pytest.raises(ConfigError, match="optimization_level"):
        BuildConfig(optimization_level=7)
    with pytest.raises(ConfigError, match="exclude_lean_runtime"):
        BuildConfig(exclude_lean_runtime=True)
    with pytest.raises(ConfigError, match="default_batch"):
        BuildConfig(default_batch=(8, 4, 16))
    table = {"name": "input", "min": [1, 1, 8, 8], "opt": [1, 1, 8, 8], "max": [1, 1, 8, 8]}  # a TOML table
    cfg = BuildConfig(**{"precision": "fp16", "shapes": [table], "default_batch": [1, 2, 4]})  # TOML lists
    assert cfg.shapes == (Profile.static("input", (1, 1, 8, 8)),) and cfg.default_batch == (1, 2, 4)
    assert hash(cfg) == hash(BuildConfig(precision="fp16", shapes=(Profile.static("input", (1, 1, 8, 8)),),
                                         default_batch=(1, 2, 4)))


# -- profiles ------------------------------------------------------------------------------
def test_parse_shapes_min_opt_max_and_static():
    got = {p.name: p.shapes() for p in parse_shapes(["input:1x3x8x8,4x3x8x8,16x3x8x8", "mask:2x5"])}
    assert got["input"] == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert got["mask"] == ((2, 5),) * 3


@pytest.mark.parametrize(("spec", "msg"), [
    ("input:16x3x8x8,4x3x8x8,32x3x8x8", "min > opt"),
    ("input:1x3x8x8,64x3x8x8,32x3x8x8", "opt > max"),
    ("input:1x3x8x8,4x3x8,8x3x8x8", "same rank"),
    ("input:1x3x8x8,4x3x8x8", "one shape or three"),
    ("1x3x8x8", "NAME:MIN,OPT,MAX"),
    ("input:0x3x8x8", "positive"),
    ("input:ax3", "look like"),
])
def test_parse_shapes_errors_are_one_clear_line(spec, msg):
    with pytest.raises(ConfigError, match=msg) as exc:
        parse_shapes([spec])
    assert "\n" not in str(exc.value)


def test_min_greater_than_max_is_rejected():
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        parse_shapes(["input:64x1x8x8,32x1x8x8,16x1x8x8"])


def test_resolve_profiles_defaults_batch_and_checks_model():
    cfg = BuildConfig(default_batch=(1, 8, 32))
    assert resolve_profiles(FP32, cfg) == {"input": ((1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8))}
    assert resolve_profiles(GraphInfo(inputs={"x": (4, 3)}), cfg) == {}  # static input: no profile
    with pytest.raises(ConfigError, match="unknown input"):
        resolve_profiles(FP32, BuildConfig(shapes=parse_shapes(["image:1x1x8x8"])))
    with pytest.raises(ConfigError, match="does not fit"):
        resolve_profiles(FP32, BuildConfig(shapes=parse_shapes(["input:1x3x8x8"])))
    with pytest.raises(ConfigError, match="DLA needs static shapes"):
        resolve_profiles(FP32, BuildConfig(precision="fp16", dla_core=0))
    assert resolve_profiles(FP32, BuildConfig(precision="fp16", dla_core=0, shapes=parse_shapes(["input:8x1x8x8"])))
    with pytest.raises(ConfigError, match="--shapes ids:"):
        resolve_profiles(GraphInfo(inputs={"ids": (-1, -1)}), cfg)


# -- cache key -----------------------------------------------------------------------------
GPU = {"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}


def _key(**over):
    args = {"onnx": "ab" * 32, "config": BuildConfig(precision="fp16", sparsity=True), "info": FP32,
            "trt": "10.3.0.26", "gpu": GPU, "calib": ""}
    args.update(over)
    plan = plan_build(args["config"], TRT10, args["info"])
    profiles = resolve_profiles(args["info"], args["config"])
    return cache_key(args["onnx"], args["config"], plan, profiles, args["trt"], args["gpu"], args["calib"])


def test_cache_key_is_stable():
    assert _key() == _key()
    assert len(_key()) == 64
    # the timing cache only changes build time, not the engine that was asked for
    assert _key(config=BuildConfig(precision="fp16", sparsity=True, timing_cache="t.cache")) == _key()


@pytest.mark.parametrize("change", [
    {"onnx": "cd" * 32}, {"config": BuildConfig(precision="fp16")}, {"config": BuildConfig(precision="fp32")},
    {"config": BuildConfig(precision="fp16", sparsity=True, shapes=parse_shapes(["input:1x1x8x8,2x1x8x8,4x1x8x8"]))},
    {"config": BuildConfig(precision="fp16", sparsity=True, optimization_level=5)},
    {"trt": "10.3.0.30"}, {"gpu": {**GPU, "name": "NVIDIA A100"}}, {"gpu": {**GPU, "compute_capability": "8.6"}},
    {"calib": "ef" * 32},
])
def test_cache_key_is_sensitive(change):
    assert _key(**change) != _key()


# -- graph info ----------------------------------------------------------------------------
def _conv_model(dtype=TensorProto.FLOAT, qdq=False):
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float16 if dtype == TensorProto.FLOAT16 else np.float32), "w")
    nodes, x = [], "input"
    if qdq:
        s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
        z = numpy_helper.from_array(np.array(0, np.int8), "z")
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x, inits = "dq", [w, s, z]
    else:
        inits = [w]
    nodes.append(helper.make_node("Conv", [x, "w"], ["out"], pads=[1, 1, 1, 1]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", dtype, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("out", dtype, ["N", 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_graph_info_reads_inputs_and_typing():
    info = graph_info(_conv_model())
    assert info.inputs == {"input": (-1, 1, 8, 8)} and not info.has_qdq and not info.has_fp16
    assert graph_info(_conv_model(qdq=True)).has_qdq
    assert graph_info(_conv_model(TensorProto.FLOAT16)).has_fp16


def test_graph_info_rejects_non_onnx():
    from trtopt.errors import InputError

    with pytest.raises(InputError, match="not a valid ONNX"):
        graph_info(b"\xff\x00not onnx at all" * 4)
