"""trtexec vocabulary: its percentile/median definitions, the summary from per-query times,
and reading a trtexec log back (the GPU measurement itself runs in tests/gpu and bench/trtexec_compare.py)."""

from __future__ import annotations

import pytest

from trtopt.benchmark.trtexec_metrics import (
    parse_trtexec_log,
    perf_result,
    side_by_side,
    trtexec_percentile,
    trtexec_summary,
)
from trtopt.errors import ConfigError

LOG = """[11/30/2026-12:00:00] [I] === Performance summary ===
[11/30/2026-12:00:00] [I] Throughput: 2391.47 qps
[11/30/2026-12:00:00] [I] Latency: min = 0.428 ms, max = 1.2 ms, mean = 0.44 ms, median = 0.437 ms, percentile(90%) = 0.446 ms, percentile(95%) = 0.45 ms, percentile(99%) = 0.47 ms
[11/30/2026-12:00:00] [I] Enqueue Time: min = 0.02 ms, max = 0.1 ms, mean = 0.025 ms, median = 0.024 ms, percentile(90%) = 0.03 ms, percentile(95%) = 0.031 ms, percentile(99%) = 0.04 ms
[11/30/2026-12:00:00] [I] H2D Latency: min = 0.01 ms, max = 0.05 ms, mean = 0.012 ms, median = 0.012 ms, percentile(90%) = 0.013 ms, percentile(95%) = 0.014 ms, percentile(99%) = 0.02 ms
[11/30/2026-12:00:00] [I] GPU Compute Time: min = 0.4 ms, max = 1.1 ms, mean = 0.41 ms, median = 0.409 ms, percentile(90%) = 0.415 ms, percentile(95%) = 0.42 ms, percentile(99%) = 0.44 ms
[11/30/2026-12:00:00] [I] D2H Latency: min = 0.01 ms, max = 0.04 ms, mean = 0.018 ms, median = 0.016 ms, percentile(90%) = 0.02 ms, percentile(95%) = 0.021 ms, percentile(99%) = 0.03 ms
[11/30/2026-12:00:00] [I] Total Host Walltime: 3.00107 s
[11/30/2026-12:00:00] [I] Total GPU Compute Time: 2.94 s
"""  # noqa: E501


def test_percentiles_and_median_follow_trtexec_not_numpy():
    a = list(range(1, 11))  # 1..10
    assert trtexec_percentile(a, 90) == 9.0  # n - 1 - floor(0.1 * 10) = 8 -> 9 (numpy would give 9.1)
    assert trtexec_percentile(a, 99) == 10.0 and trtexec_percentile(a, 50) == 5.0
    assert trtexec_percentile([], 90) == float("inf")
    r = perf_result([4.0, 1.0, 3.0, 2.0])
    assert r["median"] == 2.5 and r["min"] == 1.0 and r["max"] == 4.0 and r["mean"] == 2.5
    assert perf_result([3.0, 1.0, 2.0])["median"] == 2.0


def test_summary_latency_is_h2d_plus_compute_plus_d2h_and_throughput_is_queries_over_walltime():
    s = trtexec_summary(h2d_ms=[0.1, 0.1, 0.2], compute_ms=[1.0, 2.0, 3.0], d2h_ms=[0.05, 0.05, 0.05],
                        enqueue_ms=[0.02, 0.03, 0.04], walltime_s=0.01, batch_size=8)
    assert s["throughput_qps"] == pytest.approx(300.0) and s["samples_per_s"] == pytest.approx(2400.0)
    assert s["latency"]["max"] == pytest.approx(3.25) and s["latency"]["median"] == pytest.approx(2.15)
    assert s["total_gpu_compute_time_s"] == pytest.approx(0.006) and s["gpu_compute_time"]["mean"] == 2.0
    with pytest.raises(ValueError):
        trtexec_summary([], [], [], [], 1.0, 1)


def test_trtexec_log_reads_back_and_lines_up_side_by_side():
    t = parse_trtexec_log(LOG)
    assert t["throughput_qps"] == 2391.47 and t["total_host_walltime_s"] == 3.00107
    assert t["gpu_compute_time"] == {"min": 0.4, "max": 1.1, "mean": 0.41, "median": 0.409, "p90": 0.415,
                                     "p95": 0.42, "p99": 0.44}
    assert t["latency"]["p99"] == 0.47 and t["d2h_latency"]["median"] == 0.016
    rows = side_by_side(t, t)
    assert rows[0] == ["Throughput (qps)", "2391.5", "2391.5"]
    assert ["GPU Compute Time (median, ms)", "0.4090", "0.4090"] in rows
    with pytest.raises(ValueError, match="not a trtexec"):
        parse_trtexec_log("[I] Building engine")


def test_trtexec_metrics_are_for_tensorrt_variants_only():
    from trtopt.benchmark.trtexec_metrics import measure_trtexec_style

    class Ort:
        backend = "onnxruntime"

    with pytest.raises(ConfigError, match="TensorRT variants only"):
        measure_trtexec_style(Ort(), {}, 1)
