"""TensorRT backend on a real GPU (``pytest -m tensorrt``; skipped without TensorRT and CUDA).

Tiny ONNX graphs are built in fixtures; ONNX Runtime on CPU is the numeric oracle.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


def _conv_net(path, qdq=False, bad_op=False):
    """input[N,1,8,8] -> Conv(16, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(10) -> logits."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.3, (10, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes, x = [], "input"
    if qdq:
        inits += [numpy_helper.from_array(np.array(1 / 127, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z"),
                  numpy_helper.from_array(np.full(16, 0.9 / 127, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(16, np.int8), "wz")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
                  helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], axis=0)]
        x, wname = "xdq", "wdq"
    else:
        wname = "w"
    nodes += [helper.make_node("Conv", [x, wname], ["c"], pads=[1, 1, 1, 1], name="/features/0/Conv"),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1, name="/classifier/Gemm")]
    if bad_op:
        nodes.append(helper.make_node("FancyOp", ["logits"], ["y"], domain="com.example", name="/head/Fancy"))
    out = "y" if bad_op else "logits"
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if bad_op else [])
    path.write_bytes(helper.make_model(g, opset_imports=opsets).SerializeToString())
    return path


def _reference(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture
def model(tmp_path):
    return _conv_net(tmp_path / "tiny.onnx")


@pytest.fixture
def x():
    return np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)


def _cfg(**kw):
    from trtopt.backends.tensorrt import BuildConfig

    return BuildConfig(shapes=("input:1x1x8x8,4x1x8x8,16x1x8x8",), **kw)


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


def test_qdq_model_builds_strongly_typed_on_10_and_11(tmp_path, x):
    from trtopt.backends.tensorrt import build_engine, open_tensorrt_runner

    q = _conv_net(tmp_path / "q.onnx", qdq=True)
    res = build_engine(q, _cfg(precision="int8"), engine_dir=tmp_path)
    assert res.data["build"]["plan"]["strongly_typed"]
    assert "INT8" in res.data["layers"]["precisions"]
    with open_tensorrt_runner(res.engine) as r:
        np.testing.assert_allclose(r.infer({"input": x})["logits"], _reference(q, x), atol=0.05)


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


def test_sparsity_flag_and_report(tmp_path, model):
    from trtopt.backends.tensorrt import build_engine

    res = build_engine(model, _cfg(sparsity=True), engine_dir=tmp_path)
    assert "SPARSE_WEIGHTS" in res.data["build"]["plan"]["builder_flags"]
    assert res.data["sparsity"]["summary"].endswith("picked")


def test_unparsable_op_names_node_and_operator(tmp_path):
    from trtopt.backends.tensorrt import build_engine
    from trtopt.errors import BuildError

    bad = _conv_net(tmp_path / "bad.onnx", bad_op=True)
    with pytest.raises(BuildError, match="FancyOp") as exc:
        build_engine(bad, _cfg(), engine_dir=tmp_path)
    assert "\n" not in str(exc.value)


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


def test_min_greater_than_max_profile_is_config_error(tmp_path, model):
    from trtopt.backends.tensorrt import BuildConfig, build_engine
    from trtopt.errors import ConfigError

    with pytest.raises(ConfigError, match="min <= opt <= max"):
        build_engine(model, BuildConfig(shapes=("input:16x1x8x8,4x1x8x8,1x1x8x8",)), engine_dir=tmp_path)
