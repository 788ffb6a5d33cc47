"""Timing statistics and the measure() loop, with an injected clock (no real-time assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from trtopt.backends.base import Runner, TensorSpec
from trtopt.benchmark import BenchConfig, latency_stats, measure, summarize
from trtopt.errors import ConfigError, InputError


class FakeClock:
    """A nanosecond clock that only advances when the fake model 'runs'."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeRunner(Runner):
    backend = "fake"

    def __init__(self, clock: FakeClock, durations_ms, batch=None) -> None:
        super().__init__()
        self.clock, self.durations = clock, list(durations_ms)
        self.calls = 0
        self.batch = batch

    def _activate(self) -> None:
        pass

    def input_specs(self):
        return [TensorSpec("input", (self.batch, 3), np.dtype(np.float32))]

    def output_specs(self):
        return [TensorSpec("out", (self.batch, 3), np.dtype(np.float32))]

    def describe(self):
        return {"backend": self.backend, "threads": 3}

    def _infer(self, feeds):
        self.clock.now += int(self.durations[self.calls % len(self.durations)] * 1e6)
        self.calls += 1
        return {"out": feeds["input"]}


def test_latency_stats_on_known_values():
    s = latency_stats(list(range(1, 101)))  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101)))
    with pytest.raises(ValueError):
        latency_stats([])


def test_summarize_throughput_cv_and_unstable_flag():
    t = summarize([2.0] * 10, batch_size=8)
    assert t.throughput_sps == pytest.approx(8 * 10 / 0.020)
    assert t.cv == 0 and not t.unstable
    t2 = summarize([1.0, 3.0], batch_size=1, total_s=0.008, cv_threshold=0.05)
    assert t2.throughput_sps == pytest.approx(2 / 0.008)  # wall span wins over the latency sum
    assert t2.cv == pytest.approx(0.5) and t2.unstable


def test_measure_by_count_uses_warmup_and_exact_iterations():
    clock = FakeClock()
    with FakeRunner(clock, [1.0, 2.0, 3.0, 4.0]) as r:
        t = measure(r, {"input": np.zeros((4, 3), np.float32)}, BenchConfig(warmup=4, iterations=8), clock=clock)
    assert r.calls == 12
    assert t.iterations == 8 and t.warmup == 4 and t.mode == "cpu" and t.threads == 3
    np.testing.assert_allclose(t.latencies_ms, [1, 2, 3, 4, 1, 2, 3, 4])
    assert t.throughput_sps == pytest.approx(4 * 8 / 0.020)
    assert t.latency_ms["mean"] == pytest.approx(2.5)
    assert t.to_dict()["iterations"] == 8


def test_measure_by_duration_stops_after_min_duration_and_respects_bounds():
    clock = FakeClock()
    cfg = BenchConfig(warmup=0, min_duration_s=0.1, min_iterations=5, max_iterations=1000)
    with FakeRunner(clock, [10.0]) as r:
        t = measure(r, {"input": np.zeros((2, 3), np.float32)}, cfg, batch_size=2, clock=clock)
    assert t.iterations == 10  # 10 x 10 ms reaches 0.1 s
    cfg = BenchConfig(warmup=0, min_duration_s=10.0, min_iterations=5, max_iterations=20)
    with FakeRunner(clock, [10.0]) as r:
        assert measure(r, {"input": np.zeros((2, 3), np.float32)}, cfg, clock=clock).iterations == 20
    cfg = BenchConfig(warmup=0, min_duration_s=0.0, min_iterations=7, max_iterations=20)
    with FakeRunner(clock, [10.0]) as r:
        assert measure(r, {"input": np.zeros((2, 3), np.float32)}, cfg, clock=clock).iterations == 7


def test_measure_rejects_wrong_batch_and_gpu_modes_on_cpu():
    clock = FakeClock()
    with FakeRunner(clock, [1.0]) as r:
        with pytest.raises(InputError, match="batch_size=8"):
            measure(r, {"input": np.zeros((4, 3), np.float32)}, BenchConfig(), batch_size=8, clock=clock)
        with pytest.raises(ConfigError, match="needs a GPU"):
            measure(r, {"input": np.zeros((4, 3), np.float32)}, BenchConfig(mode="cuda-graph"), clock=clock)
    with FakeRunner(clock, [1.0], batch=1) as r, pytest.raises(InputError, match="expects"):
        measure(r, {"input": np.zeros((4, 3), np.float32)}, BenchConfig(iterations=1), clock=clock)


def test_bench_config_validation_and_toml_lists():
    assert BenchConfig(batch_sizes=[1, 8]).batch_sizes == (1, 8)
    assert BenchConfig(batch_sizes=(1, 8)).effective_eval_batch_size == 8
    for bad in ({"batch_sizes": [0]}, {"warmup": -1}, {"iterations": 0}, {"mode": "fast"},
                {"min_iterations": 10, "max_iterations": 5}):
        with pytest.raises(ConfigError):
            BenchConfig(**bad)


class FakeGpuRunner(FakeRunner):
    """Pretends to run on CUDA; records which entry point the timing loop used."""

    device = "cuda:0"

    def __init__(self, clock, graph=True) -> None:
        super().__init__(clock, [1.0])
        self.used = []
        if graph:
            self.prepare_cuda_graph = lambda feeds: (lambda: self.used.append("graph"))

    def prepare(self, feeds):
        return lambda: self.used.append("prepared")

    def _infer(self, feeds):
        self.used.append("infer")
        return {"out": feeds["input"]}


def test_gpu_modes_are_labelled_and_use_the_right_entry_point(monkeypatch):
    import trtopt.benchmark.timing as timing

    def fake_time_gpu(fn, cfg):
        for _ in range(cfg.iterations):
            fn()
        return [2.0] * cfg.iterations, 0.002 * cfg.iterations

    monkeypatch.setattr(timing, "_time_gpu", fake_time_gpu)
    feeds = {"input": np.zeros((4, 3), np.float32)}
    cfg = BenchConfig(warmup=1, iterations=3)
    with FakeGpuRunner(FakeClock()) as r:
        for mode, used in (("auto", "prepared"), ("gpu-no-transfer", "prepared"), ("gpu-e2e", "infer"),
                           ("cuda-graph", "graph")):
            r.used.clear()
            t = measure(r, feeds, cfg, mode=mode)
            assert t.mode == (mode if mode != "auto" else "gpu-no-transfer")
            assert r.used == [used] * 4  # 1 warm-up + 3 timed
            assert t.throughput_sps == pytest.approx(4 * 3 / 0.006)
        with pytest.raises(ConfigError, match="needs a CPU runner"):
            measure(r, feeds, cfg, mode="cpu")
    with FakeGpuRunner(FakeClock(), graph=False) as r, pytest.raises(ConfigError, match="CUDA-graph"):
        measure(r, feeds, cfg, mode="cuda-graph")


def test_pareto_front():
    from trtopt.benchmark.plots import pareto_front

    pts = [(100.0, 97.0), (200.0, 96.5), (150.0, 96.0), (300.0, 90.0), (90.0, 96.9)]
    assert pareto_front(pts) == [0, 1, 3]
