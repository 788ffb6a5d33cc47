"""trtexec-vocabulary timing of a real TensorRT engine and interleaved timing on the GPU."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers.onnx_models import tiny_conv_net


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_trtexec_metrics_and_interleaved_rounds_on_a_real_engine(tmp_path):
    from trtopt.backends.tensorrt import BuildConfig, Profile, build_engine, open_tensorrt_runner
    from trtopt.benchmark import BenchConfig
    from trtopt.benchmark.interleave import time_comparison
    from trtopt.benchmark.trtexec_metrics import measure_trtexec_style

    model = tiny_conv_net(tmp_path / "tiny.onnx")
    engine = build_engine(model, BuildConfig(shapes=(Profile("input", (1, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8)),)),
                          engine_dir=tmp_path / "engines").engine
    x = {"input": np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)}
    with open_tensorrt_runner(engine) as a, open_tensorrt_runner(engine) as b:
        s = measure_trtexec_style(a, x, 4, duration_s=0.2, warmup=5)
        assert s["queries"] >= 10 and s["throughput_qps"] > 0
        med = s["latency"]["median"]
        assert med >= s["gpu_compute_time"]["min"] and s["gpu_compute_time"]["median"] > 0
        got = time_comparison([("a", a, "a"), ("b", b, "b")], [4], lambda _k, _bs: x,
                              BenchConfig(warmup=5, min_duration_s=0.2))
    ta, tb = got[("a", 4)], got[("b", 4)]
    assert ta.mode == "gpu-no-transfer" and len(ta.round_sps) >= 5 and ta.trtexec["queries"] >= 10
    assert tb.group == ta.group == "b4" and len(tb.round_sps) == len(ta.round_sps)
    assert "gpu_conditions" in ta.to_dict() or ta.conditions == {}
