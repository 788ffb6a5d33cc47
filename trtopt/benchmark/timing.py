"""Throughput and latency measurement.

Methodology (see ``bench/README.md``): warm-up iterations are run and discarded, then timed
iterations by count or by minimum duration. On CPU each iteration is bracketed by
``time.perf_counter_ns``; throughput is samples over the wall span of the timed loop (so the
loop's own bookkeeping counts against trtopt, not in its favour). On GPU each iteration is
bracketed by CUDA events on the current stream and throughput uses the span from the first
start event to the last end event, so host/device overlap is credited the way trtexec does.
Every number carries its *mode* because e2e (with host<->device copies), no-transfer
(device-resident inputs) and CUDA-graph timings of the same engine legitimately differ.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.benchmark.config import BenchConfig
from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class TimingResult:
    """Timing of one variant at one batch size.

    Attributes:
        throughput_sps: Samples per second.
        latency_ms: ``p50``, ``p90``, ``p99``, ``mean``, ``std`` of per-iteration latency (ms).
        cv: Coefficient of variation (std / mean) of the latencies.
        iterations: Timed iterations.
        mode: ``cpu``, ``gpu-e2e``, ``gpu-no-transfer`` or ``cuda-graph``.
        threads: CPU threads the backend used (``None`` when unknown).
        unstable: Whether ``cv`` exceeded the configured threshold.
        warmup: Untimed warm-up iterations run before timing.
        batch_size: Samples per iteration.
        total_s: Wall span of the timed loop in seconds.
        latencies_ms: Every per-iteration latency (kept in memory for plots, not serialized).
        method: ``sequential`` (one block, :func:`measure`) or ``interleaved`` (rounds shared with the
            other variants of a comparison, :func:`trtopt.benchmark.interleave.measure_interleaved`).
        round_sps: Per-round throughputs (samples/s) of an interleaved run, in round order.
        throughput_ci95: 95 % bootstrap interval ``(low, high)`` of ``throughput_sps`` (samples/s),
            ``None`` for a sequential run.
        group: Identity of the interleaved comparison (variants of one group share their rounds,
            so their speedups are computed from paired rounds); ``""`` when sequential.
        conditions: GPU conditions read around this variant's rounds (NVML; empty on CPU).
        trtexec: TensorRT variants: trtexec's metrics in its vocabulary
            (:func:`trtopt.benchmark.trtexec_metrics.trtexec_summary`); empty otherwise.
    """

    throughput_sps: float
    latency_ms: dict[str, float]
    cv: float
    iterations: int
    mode: str
    threads: int | None
    unstable: bool
    warmup: int = 0
    batch_size: int = 1
    total_s: float = 0.0
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    method: str = "sequential"
    round_sps: tuple[float, ...] = ()
    throughput_ci95: tuple[float, float] | None = None
    group: str = ""
    conditions: dict[str, Any] = field(default_factory=dict, compare=False)
    trtexec: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the report's ``timing`` block (without the per-iteration latencies)."""
        d = {
            "mode": self.mode, "iterations": self.iterations, "cv": round(self.cv, 6), "warmup": self.warmup,
            "threads": self.threads, "unstable": self.unstable, "total_s": round(self.total_s, 6),
            "method": self.method, "rounds": len(self.round_sps), "group": self.group,
            "round_throughputs_sps": [round(x, 3) for x in self.round_sps],
            "throughput_ci95": None if self.throughput_ci95 is None else [round(x, 3) for x in self.throughput_ci95],
        }
        if self.conditions:
            d["gpu_conditions"] = self.conditions
        if self.trtexec:
            d["trtexec"] = self.trtexec
        return d


def latency_stats(latencies_ms: np.ndarray | list[float]) -> dict[str, float]:
    """Summarize per-iteration latencies.

    Percentiles use numpy's linear interpolation between closest ranks; ``std`` is the
    population standard deviation (ddof=0).

    Args:
        latencies_ms: Latencies in milliseconds (at least one).

    Returns:
        ``{"p50", "p90", "p99", "mean", "std"}`` in milliseconds.
    """
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("latency_stats needs at least one latency")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()), "std": float(a.std())}


def summarize(
    latencies_ms: np.ndarray | list[float],
    batch_size: int,
    total_s: float | None = None,
    *,
    mode: str = "cpu",
    threads: int | None = None,
    warmup: int = 0,
    cv_threshold: float = 0.05,
    warn: bool = True,
) -> TimingResult:
    """Turn per-iteration latencies into a :class:`TimingResult`.

    Args:
        latencies_ms: Per-iteration latencies (ms).
        batch_size: Samples per iteration.
        total_s: Wall span of the timed loop; defaults to the sum of the latencies.
        mode: Timing mode label.
        threads: CPU threads used by the backend.
        warmup: Warm-up iterations that were run.
        cv_threshold: CV above which the result is flagged unstable.
        warn: Log a warning when the run is unstable (a caller timing several variants warns once
            for all of them instead).

    Returns:
        The summary (``unstable`` set when the CV exceeds ``cv_threshold``).
    """
    a = np.asarray(latencies_ms, dtype=np.float64)
    stats = latency_stats(a)
    span = float(total_s) if total_s is not None else float(a.sum()) / 1e3
    throughput = batch_size * a.size / span if span > 0 else float("inf")
    cv = stats["std"] / stats["mean"] if stats["mean"] > 0 else 0.0
    unstable = cv > cv_threshold
    if unstable and warn:
        log.warning("unstable timing: latency CV %.1f%% > %.1f%% over %d iterations (%s); "
                    "close other programs, pin clocks or time longer", 100 * cv, 100 * cv_threshold, a.size, mode)
    return TimingResult(throughput_sps=throughput, latency_ms=stats, cv=cv, iterations=int(a.size), mode=mode,
                        threads=threads, unstable=unstable, warmup=warmup, batch_size=batch_size, total_s=span,
                        latencies_ms=a)


def runner_device(runner: Any) -> str:
    """Return ``"cuda"`` for runners executing on a GPU, else ``"cpu"``."""
    if getattr(runner, "backend", "") == "tensorrt":
        return "cuda"
    dev = str(getattr(runner, "device", "") or runner.describe().get("device", "cpu"))
    return "cuda" if dev.startswith("cuda") or "CUDAExecutionProvider" in dev else "cpu"


def runner_threads(runner: Any) -> int | None:
    """Return the CPU thread count a runner reports (or the machine's core count)."""
    info = runner.describe()
    for key in ("threads", "intra_op_threads"):
        if isinstance(info.get(key), int) and info[key] > 0:
            return int(info[key])
    return os.cpu_count()


def _check_batch(feeds: Mapping[str, np.ndarray], batch_size: int) -> None:
    for name, arr in feeds.items():
        if np.ndim(arr) == 0 or np.shape(arr)[0] != batch_size:
            raise InputError(f"input '{name}' has batch {np.shape(arr)[:1]} but batch_size={batch_size} was asked for")


def _iteration_plan(cfg: BenchConfig) -> Callable[[int, float], bool]:
    """Return ``done(n, elapsed_s)`` implementing count or duration mode."""
    if cfg.iterations is not None:
        return lambda n, _e: n >= cfg.iterations
    return lambda n, e: n >= cfg.max_iterations or (n >= cfg.min_iterations and e >= cfg.min_duration_s)


def _time_cpu(fn: Callable[[], object], cfg: BenchConfig, clock: Callable[[], int]) -> tuple[list[float], float]:
    done = _iteration_plan(cfg)
    lat_ns: list[int] = []
    append = lat_ns.append
    start = clock()
    t1 = start
    while True:  # keep the body minimal: it is what the overhead check compares against a bare loop
        t0 = clock()
        fn()
        t1 = clock()
        append(t1 - t0)
        if done(len(lat_ns), (t1 - start) * 1e-9):
            break
    return [x * 1e-6 for x in lat_ns], (t1 - start) * 1e-9


def gpu_event_loop(fn: Callable[[], object], done: Callable[[int, float], bool]) -> tuple[list[float], float]:
    """Time ``fn`` with CUDA events until ``done(iterations, host seconds)``; return (ms per call, span s).

    Synchronizes first (queued work of whatever ran before must not land in the timed span) and
    last (events are read only after the GPU reached them). Shared by sequential and interleaved timing.
    """
    import torch  # only GPU runners reach this

    torch.cuda.synchronize()
    pairs = []
    host0 = time.perf_counter()
    while True:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        pairs.append((s, e))
        if done(len(pairs), time.perf_counter() - host0):
            break
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in pairs], pairs[0][0].elapsed_time(pairs[-1][1]) * 1e-3


def _time_gpu(fn: Callable[[], object], cfg: BenchConfig) -> tuple[list[float], float]:
    return gpu_event_loop(fn, _iteration_plan(cfg))


def _gpu_callable(runner: Any, feeds: Mapping[str, np.ndarray], mode: str) -> tuple[Callable[[], object], str]:
    if mode in ("auto", "gpu-no-transfer"):
        return runner.prepare(feeds), "gpu-no-transfer"
    if mode == "gpu-e2e":
        runner.check_inputs(feeds)
        bound = dict(feeds)
        return (lambda: runner.infer(bound)), "gpu-e2e"
    if mode == "cuda-graph":
        if not hasattr(runner, "prepare_cuda_graph"):
            raise ConfigError(f"the {runner.backend} runner does not support CUDA-graph timing")
        return runner.prepare_cuda_graph(feeds), "cuda-graph"
    raise ConfigError(f"timing mode '{mode}' needs a CPU runner, but this runner runs on the GPU")


def measure(
    runner: Any,
    feeds: Mapping[str, np.ndarray],
    cfg: BenchConfig | None = None,
    batch_size: int | None = None,
    *,
    mode: str | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> TimingResult:
    """Time one runner on fixed inputs.

    GPU runners (``runner.device`` starting with ``cuda``, or TensorRT) are timed with CUDA
    events. Their ``prepare(feeds)`` is expected to keep inputs device-resident
    ("gpu-no-transfer"); "gpu-e2e" times ``runner.infer`` (host arrays in and out);
    "cuda-graph" needs ``runner.prepare_cuda_graph(feeds)``.

    Args:
        runner: An active :class:`~trtopt.backends.base.Runner`.
        feeds: Input name to array; axis 0 is the batch.
        cfg: Warm-up and iteration settings (defaults: ``BenchConfig()``).
        batch_size: Samples per inference; defaults to the feeds' first dimension.
        mode: Overrides ``cfg.mode``.
        clock: Nanosecond clock for CPU timing (injectable for tests).

    Returns:
        The timing summary (per-iteration latencies kept in ``latencies_ms``).

    Raises:
        InputError: Feeds do not match the batch size or the model.
        ConfigError: A timing mode the runner cannot provide.
    """
    cfg = cfg or BenchConfig()
    if batch_size is None:
        batch_size = int(np.shape(next(iter(feeds.values())))[0])
    _check_batch(feeds, batch_size)
    mode = mode or cfg.mode
    device = runner_device(runner)
    if device == "cpu":
        if mode not in ("auto", "cpu"):
            raise ConfigError(f"timing mode '{mode}' needs a GPU runner; the {runner.backend} runner runs on the CPU")
        fn, label = runner.prepare(feeds), "cpu"
    else:
        fn, label = _gpu_callable(runner, feeds, mode)
    for _ in range(cfg.warmup):
        fn()
    if device == "cpu":
        lat, span = _time_cpu(fn, cfg, clock)
    else:
        lat, span = _time_gpu(fn, cfg)
    return summarize(lat, batch_size, span, mode=label, threads=runner_threads(runner), warmup=cfg.warmup,
                     cv_threshold=cfg.cv_threshold)
