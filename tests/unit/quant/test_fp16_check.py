"""FP16 overflow preview: overflow that only FP16 arithmetic shows, found on the CPU."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from trtopt.errors import InputError
from trtopt.quant import CalibData, FP16Config, convert_fp16, quantize
from trtopt.quant.fp16_check import fp16_overflows

F32 = TensorProto.FLOAT
D = 512
#: Without the static normalization rule, so that the square re-enters FP16 and only the preview can see it.
_NO_NORM = FP16Config(block_layernorm_pattern=False)


def _rms_model() -> onnx.ModelProto:
    """y = sqrt(mean((18 x)^2)): the square is kept FP32 (Pow), re-enters FP16 for the ReduceMean."""
    nodes = [helper.make_node("Mul", ["x", "gain"], ["h"], name="gain"),
             helper.make_node("Pow", ["h", "two"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["ms"], name="mean", axes=[-1], keepdims=1),
             helper.make_node("Sqrt", ["ms"], ["y"], name="sqrt")]
    inits = [numpy_helper.from_array(np.array(18.0, np.float32), "gain"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    g = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", F32, ["N", D])],
                          [helper.make_tensor_value_info("y", F32, ["N", 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _data(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (np.sign(rng.standard_normal((n, D))) + 0.05 * rng.standard_normal((n, D))).astype(np.float32)


def _ort(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_reduction_overflow_hidden_on_cpu_is_reported_and_fixed():
    m, x = _rms_model(), _data()
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    plain = convert_fp16(m, _NO_NORM).model  # the ReduceMean runs in FP16
    # ONNX Runtime's CPU kernels accumulate in float32: the broken model scores perfectly there
    np.testing.assert_allclose(_ort(plain, x), ref, rtol=2e-3)
    found = fp16_overflows(plain, {"x": x}, reference=m)
    expected = float(np.abs((18.0 * x.astype(np.float64)) ** 2).sum(axis=-1).max())  # what an FP16 sum must hold
    assert expected > 65504
    assert [(f.node, f.kind) for f in found] == [("mean", "accumulation")]
    # the preview sees the first 4 samples: its peak is the true sum over those samples
    np.testing.assert_allclose(found[0].max_abs, np.abs((18.0 * x[:4].astype(np.float64)) ** 2).sum(-1).max(),
                               rtol=1e-2)
    assert "node mean (ReduceMean)" in str(found[0]) and "overflows FP16" in str(found[0])

    res = quantize(m, None, _NO_NORM, CalibData({"x": x}))
    fixed = res.model
    assert res.fp16_reasons["mean"].startswith("FP16 overflow on data: node mean (ReduceMean)")
    assert "no overflow" in res.fp16_preview
    assert fp16_overflows(fixed, {"x": x}) == []
    np.testing.assert_allclose(_ort(fixed, x), ref, rtol=2e-3)


def _square_model() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["h"], name="square"),
                           helper.make_node("Mul", ["h", "k"], ["y"], name="shrink")], "sq",
                          [helper.make_tensor_value_info("x", F32, ["N", 4])],
                          [helper.make_tensor_value_info("y", F32, ["N", 4])],
                          [numpy_helper.from_array(np.array(1e-3, np.float32), "k")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_output_overflow_names_the_node_and_magnitude():
    m = _square_model()
    x = np.full((2, 4), 300.0, np.float32)  # 300^2 = 9e4 > 65504
    found = fp16_overflows(convert_fp16(m).model, {"x": x}, reference=m)
    assert [(f.node, f.kind) for f in found] == [("square", "output")]
    np.testing.assert_allclose(found[0].max_abs, 9e4)


def test_unfixable_overflow_is_an_error():
    m = _square_model()
    x = np.full((2, 4), 300.0, np.float32)
    cfg = FP16Config(keep_io_types=False, data_max=1e9)  # FP16 graph input; data rule off
    with pytest.raises(InputError, match="overflows"):
        quantize(m, None, cfg, CalibData({"x": np.full((2, 4), 7e4, np.float32)}))
    # the square and the Mul reading it both stay FP32: nothing computes in FP16, which is an error, not the FP32 model
    with pytest.raises(InputError, match=r"no node computing in FP16.*square: FP16 overflow on data"):
        quantize(m, None, FP16Config(data_max=1e9), CalibData({"x": x}))


def test_bench_fails_an_fp16_variant_that_overflows(tmp_path):
    """`trtopt bench` on ONNX Runtime: the CPU scores the overflowing FP16 model fine, the row says failed."""
    from trtopt.benchmark.config import BenchConfig
    from trtopt.benchmark.suite import bench_models
    from trtopt.onnx.io import save_onnx

    m, x = _rms_model(), _data(16)
    fp32 = save_onnx(m, tmp_path / "fp32.onnx")
    bad = save_onnx(convert_fp16(m, _NO_NORM).model, tmp_path / "fp16.onnx")
    good = save_onnx(quantize(m, None, FP16Config(), CalibData({"x": x})).model, tmp_path / "fp16_checked.onnx")
    cfg = BenchConfig(batch_sizes=(4,), warmup=0, iterations=5)
    rep = bench_models([fp32, bad, good], ["onnxruntime"], cfg, data={"x": x})
    rows = {v.name: v for v in rep.variants}
    assert rows["fp16"].precision == "fp16" and rows["fp16"].status == "failed"
    assert "node mean (ReduceMean)" in rows["fp16"].reason
    assert rows["fp32"].status == "ok" and rows["fp16_checked"].status == "ok"
