"""Build-only TensorRT backend tests: TensorRT 10/11 where it can build (with a GPU), else TensorRT for RTX.

TensorRT for RTX builds on a CPU-only machine, so these run in CI with ``trtopt[tensorrt-rtx]``; the
runtime half is in tests/gpu/test_tensorrt_backend.py.
"""

from __future__ import annotations

import json

import pytest

from _helpers.onnx_models import tiny_conv_net as _conv_net
from _helpers.tiny_builds import tiny_batch
from _helpers.tiny_builds import tiny_build_config as _cfg


@pytest.fixture
def backend():
    """``tensorrt`` (10/11) where it can build (needs a GPU), else ``tensorrt-rtx`` (builds on the CPU)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        import torch

        if torch.cuda.is_available():
            return "tensorrt"
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        return "tensorrt-rtx"
    pytest.skip("no TensorRT builder: pip install 'trtopt[tensorrt-rtx]' (CPU) or 'trtopt[tensorrt]' (GPU)")


@pytest.fixture
def model(tmp_path):
    return _conv_net(tmp_path / "tiny.onnx")


x = pytest.fixture(tiny_batch, name="x")


def test_sparsity_flag_and_report(tmp_path, model, backend):
    from trtopt.backends.tensorrt import build_engine

    res = build_engine(model, _cfg(sparsity=True, backend=backend), engine_dir=tmp_path)
    assert "SPARSE_WEIGHTS" in res.data["build"]["plan"]["builder_flags"]
    summary = res.data["sparsity"]["summary"]
    if backend == "tensorrt-rtx":  # its AOT build prints no (Sparsity) lines: the count is unknown, not 0
        assert summary.startswith("unknown (TensorRT-RTX"), summary
    else:
        assert summary.endswith("picked")


def test_unparsable_op_names_node_and_operator(tmp_path, backend):
    from trtopt.backends.tensorrt import build_engine
    from trtopt.errors import BuildError

    bad = _conv_net(tmp_path / "bad.onnx", bad_op=True)
    with pytest.raises(BuildError, match="FancyOp") as exc:
        build_engine(bad, _cfg(backend=backend), engine_dir=tmp_path)
    assert "\n" not in str(exc.value)


def test_min_greater_than_max_profile_is_config_error(tmp_path, model, backend):
    from trtopt.backends.tensorrt import BuildConfig, Profile, build_engine
    from trtopt.errors import ConfigError

    with pytest.raises(ConfigError, match="min <= opt <= max"):
        reversed_profile = Profile("input", (16, 1, 8, 8), (4, 1, 8, 8), (1, 1, 8, 8))
        build_engine(model, BuildConfig(shapes=(reversed_profile,), backend=backend),
                     engine_dir=tmp_path)


def test_build_writes_engine_manifest_profile_and_int8_report(tmp_path, backend, x):
    from trtopt.backends.tensorrt import build_engine

    q = _conv_net(tmp_path / "q.onnx", qdq=True)
    res = build_engine(q, _cfg(precision="int8", backend=backend), engine_dir=tmp_path / "engines")
    assert not res.reused and res.engine.is_file() and res.manifest.is_file()
    m = json.loads(res.manifest.read_text())
    assert m["build"]["plan"]["cleared_flags"] == ["TF32"] and m["build"]["plan"]["strongly_typed"]
    assert m["profiles"]["input"]["opt"] == [4, 1, 8, 8]
    assert {t["name"] for t in m["io"]} == {"input", "logits"}
    assert m["compiled"]["summary"] == "quantized in ONNX: 1, compiled INT8: 1, fell back to float: 0"
    assert build_engine(q, _cfg(precision="int8", backend=backend), engine_dir=tmp_path / "engines").reused
