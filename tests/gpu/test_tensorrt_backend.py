"""TensorRT backend on a real GPU: runtime tests, marked ``tensorrt`` and ``gpu`` (skipped without them).

Build-only tests live in tests/unit/backends/tensorrt/test_loader.py and run in CI with TensorRT for RTX (no GPU).
Tiny ONNX graphs are built in fixtures; ONNX Runtime on CPU is the numeric oracle.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _helpers.onnx_models import tiny_conv_net as _conv_net
from _helpers.tiny_builds import tiny_batch
from _helpers.tiny_builds import tiny_build_config as _cfg


def _reference(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture
def model(tmp_path):
    return _conv_net(tmp_path / "tiny.onnx")


x = pytest.fixture(tiny_batch, name="x")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp32_build_run_manifest_and_reuse(tmp_path, model, x):
    from trtopt.backends.tensorrt import build_engine, open_tensorrt_runner

    res = build_engine(model, _cfg(), engine_dir=tmp_path / "engines")
    assert not res.reused and res.engine.is_file() and res.manifest.is_file()
    m = json.loads(res.manifest.read_text())
    assert m["build"]["plan"]["cleared_flags"] == ["TF32"] and m["build"]["plan"]["strongly_typed"]
    assert m["profiles"]["input"]["opt"] == [4, 1, 8, 8]
    assert {t["name"] for t in m["io"]} == {"input", "logits"}
    assert build_engine(model, _cfg(), engine_dir=tmp_path / "engines").reused
    with open_tensorrt_runner(res.engine) as r:
        got = r.infer({"input": x})["logits"]
        np.testing.assert_allclose(got, _reference(model, x), rtol=1e-4, atol=1e-4)
        run = r.prepare({"input": x})
        run()
    assert not r.active


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_cuda_graph_replay_matches(tmp_path, model, x):
    import torch

    from trtopt.backends.tensorrt import build_engine, open_tensorrt_runner

    res = build_engine(model, _cfg(), engine_dir=tmp_path)
    with open_tensorrt_runner(res.engine, cuda_graph=True) as r:
        replay = r.prepare({"input": x})
        replay()
        torch.cuda.synchronize()
        out = r._state["bound"][1]["logits"].cpu().numpy()
    np.testing.assert_allclose(out, _reference(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_qdq_model_builds_strongly_typed_on_10_and_11(tmp_path, x):
    from trtopt.backends.tensorrt import build_engine, open_tensorrt_runner

    q = _conv_net(tmp_path / "q.onnx", qdq=True)
    res = build_engine(q, _cfg(precision="int8"), engine_dir=tmp_path)
    assert res.data["build"]["plan"]["strongly_typed"]
    assert "INT8" in res.data["layers"]["precisions"]
    with open_tensorrt_runner(res.engine) as r:
        np.testing.assert_allclose(r.infer({"input": x})["logits"], _reference(q, x), atol=0.05)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_implicit_int8_from_calibration_table_on_10x(tmp_path, model):
    import tensorrt as trt

    from trtopt.backends.tensorrt import build_engine
    from trtopt.calib.table import CalibrationTable

    if not hasattr(trt.BuilderFlag, "INT8"):
        pytest.skip("strongly typed TensorRT (11.x): no implicit INT8")
    table = CalibrationTable({"input": 1.0, "c": 3.0, "r": 3.0, "p": 1.0, "f": 1.0, "logits": 4.0})
    table.save_json(tmp_path / "t.json")
    res = build_engine(model, _cfg(precision="int8"), engine_dir=tmp_path, calibration=tmp_path / "t.json")
    assert res.data["build"]["plan"]["builder_flags"] == ["INT8"]
    assert res.data["calibration"]["header"].startswith("TRT-10")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_non_engine_and_foreign_engine_are_clear_errors(tmp_path, model):
    from trtopt.backends.tensorrt import build_engine, open_tensorrt_runner
    from trtopt.errors import IncompatibleArtifactError, InputError

    fake = tmp_path / "fake.engine"
    fake.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="not a TensorRT engine"), open_tensorrt_runner(fake):
        pass
    res = build_engine(model, _cfg(), engine_dir=tmp_path)
    m = json.loads(res.manifest.read_text())
    m["tensorrt"]["version"] = "9.9.9.9"
    res.manifest.write_text(json.dumps(m))
    with pytest.raises(IncompatibleArtifactError, match="9.9.9.9"), open_tensorrt_runner(res.engine):
        pass


