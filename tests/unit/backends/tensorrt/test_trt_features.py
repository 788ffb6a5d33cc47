"""Feature detection by name: a set of names, an object chain, and the real TensorRT-for-RTX module."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from trtopt.backends.tensorrt.features import (
    WEAK_TYPING_NAMES,
    Features,
    detect_features,
    has_attr_chain,
    nv_tensorrt_version,
    tensorrt_features,
)
from trtopt.errors import ConfigError


def test_weak_typing_needs_every_one_of_its_names():
    assert detect_features(set(WEAK_TYPING_NAMES).__contains__).weak_typing
    for missing in WEAK_TYPING_NAMES:
        assert not detect_features((set(WEAK_TYPING_NAMES) - {missing}).__contains__).weak_typing


def test_rtx_and_same_compute_capability_are_read_from_their_own_names():
    assert detect_features({"ComputeCapability"}.__contains__) == Features(weak_typing=False, rtx=True)
    got = detect_features({"HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"}.__contains__)
    assert got == Features(weak_typing=False, same_compute_capability=True)


def test_attribute_chains_resolve_step_by_step():
    trt = SimpleNamespace(BuilderFlag=SimpleNamespace(INT8=1))
    assert has_attr_chain(trt, "BuilderFlag.INT8") and has_attr_chain(trt, "BuilderFlag")
    assert not has_attr_chain(trt, "BuilderFlag.FP8") and not has_attr_chain(trt, "Builder.create_network")


def test_a_fake_tensorrt_10_module_has_weak_typing():
    names = {"BuilderFlag": SimpleNamespace(FP16=0, INT8=1), "IInt8EntropyCalibrator2": object,
             "IBuilderConfig": SimpleNamespace(int8_calibrator=None)}
    assert tensorrt_features(SimpleNamespace(**names)) == Features(weak_typing=True)


@pytest.mark.tensorrt_rtx
def test_tensorrt_for_rtx_is_strongly_typed_and_rtx():
    trt = pytest.importorskip("tensorrt_rtx")
    got = tensorrt_features(trt)
    assert got.rtx and not got.weak_typing


@pytest.mark.parametrize(("version", "nv"), [("10.3.0.26", 100300), ("11.4.0.106", 110400), ("8.6.1", 8601)])
def test_nv_tensorrt_version_follows_the_header_formula(version, nv):
    assert nv_tensorrt_version(version) == nv


def test_a_version_that_is_not_one_is_a_config_error():
    with pytest.raises(ConfigError, match="not a TensorRT version: 'rtx'"):
        nv_tensorrt_version("rtx")
