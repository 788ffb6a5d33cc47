"""API check by import where the bindings import (TensorRT for RTX does on a CPU-only machine).

Checks every name the backend declares against the imported ``tensorrt_rtx`` module, and measures the
``objdump`` scanner against that truth on the same ``.so`` (its known false results are fixed).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorrt_rtx")
pytestmark = pytest.mark.tensorrt_rtx

from tools.trt_apicheck import (  # noqa: E402
    _SO,
    BindingsAPI,
    _scan,
    imported_api,
    merge_scopes,
    scanner_errors,
)
from trtopt.backends.tensorrt.api import USED_API  # noqa: E402
from trtopt.backends.tensorrt.config import PRECISIONS, RTX_TARGETS, BuildConfig  # noqa: E402
from trtopt.backends.tensorrt.features import detect_features  # noqa: E402
from trtopt.backends.tensorrt.graph import GraphInfo  # noqa: E402
from trtopt.backends.tensorrt.plan import plan_build  # noqa: E402
from trtopt.errors import ConfigError  # noqa: E402


def _bare(name):
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


@pytest.fixture(scope="module")
def rtx():
    return imported_api("tensorrt_rtx")


def test_every_declared_name_exists_in_tensorrt_rtx_by_import(rtx):
    for group in ("common", "rtx_only", "optional"):
        missing = [n for n in USED_API[group] if not rtx.has(_bare(n))]
        assert not missing, f"TensorRT for RTX {rtx.version} lacks {group} names {missing}"
    present = [n for n in USED_API["weak_typing_only"] if rtx.has(_bare(n))]
    assert present == [], "RTX is strongly typed only: no FP16/INT8 flags or calibrators"


def test_feature_detection_and_targets_by_import(rtx):
    feats = detect_features(rtx.has)
    assert feats.rtx and not feats.weak_typing
    for target in RTX_TARGETS:
        assert rtx.has(f"ComputeCapability.{target}")


def test_every_planned_flag_exists_in_tensorrt_rtx(rtx):
    feats = detect_features(rtx.has)
    infos = [GraphInfo({"x": (-1, 4)}, q, f) for q, f in itertools.product((False, True), repeat=2)]
    planned = 0
    for prec, info, sparse in itertools.product(PRECISIONS, infos, (False, True)):
        try:
            plan = plan_build(BuildConfig(precision=prec, sparsity=sparse, version_compatible=True,
                                          exclude_lean_runtime=True, backend="tensorrt-rtx"), feats, info)
        except ConfigError:
            continue
        planned += 1
        assert plan.rtx
        for flag in (*plan.builder_flags, *plan.cleared_flags):
            assert rtx.has(f"BuilderFlag.{flag}"), (prec, flag)
        for flag in plan.network_flags:
            assert rtx.has(f"NetworkDefinitionCreationFlag.{flag}"), flag
        assert rtx.has(f"ProfilingVerbosity.{plan.profiling_verbosity}")
    assert planned >= 8


def test_bindings_file_pattern_finds_the_rtx_module():
    assert _SO.search("tensorrt_rtx_bindings/tensorrt_rtx.so")
    assert _SO.search("tensorrt_bindings/tensorrt.so")
    assert _SO.search("tensorrt/tensorrt.cpython-311-x86_64-linux-gnu.so")
    assert not _SO.search("tensorrt_libs/libnvinfer.so")


@pytest.mark.slow
def test_objdump_scanner_agrees_with_the_import_on_the_rtx_module(rtx):
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    so = Path(rtx.module.__file__).parent.parent / "tensorrt_rtx_bindings" / "tensorrt_rtx.so"
    if not so.is_file():
        pytest.skip(f"{so} not found")
    seq, members, alias = _scan(so)
    scanned = BindingsAPI(rtx.version, frozenset(seq), merge_scopes(seq, members, alias))
    trt = rtx.module
    names = [_bare(n) for group in USED_API.values() for n in group]
    for enum in ("BuilderFlag", "NetworkDefinitionCreationFlag", "ProfilingVerbosity", "ComputeCapability"):
        names += [f"{enum}.{m}" for m in trt.__dict__[enum].__members__]
    # method names of other classes must not read as enum members (the 11.4 false result)
    names += ["BuilderFlag.set_flag", "BuilderFlag.execute_async_v3", "NetworkDefinitionCreationFlag.create_network"]
    assert scanner_errors(scanned, rtx, names) == {"false_missing": [], "false_present": []}
