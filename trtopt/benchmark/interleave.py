"""Interleaved timing: every variant of one comparison timed round-robin in many short rounds.

Why: timed one after another, variant B runs while a neighbour process wakes up, or
on a GPU that has heated up and throttled since A ran, and the speedup B/A measures the machine,
not the model (a graph with the very same kernels read 2.08x, then 0.46x). Timed in rounds
``A B C | B C A | C A B ...`` (a random variant starts each round), drift and neighbours hit
every variant alike, and two variants' throughputs in the same round form a *pair* whose ratio
cancels what the round shared.

Per variant: throughput = median of its per-round throughputs (a stall moves one round, not the
median), with a bootstrap 95 % interval (:mod:`trtopt.benchmark.stats`); latency percentiles
over every timed iteration, as for :func:`~trtopt.benchmark.timing.measure`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trtopt.benchmark.config import BenchConfig
from trtopt.benchmark.gpu_conditions import NvmlMonitor, condition_warnings, summarize_readings
from trtopt.benchmark.stats import bootstrap_median_ci
from trtopt.benchmark.timing import (
    TimingResult,
    _check_batch,
    _gpu_callable,
    gpu_event_loop,
    runner_device,
    runner_threads,
    summarize,
)
from trtopt.errors import ConfigError
from trtopt.log import get_logger

log = get_logger(__name__)

#: ``monitor(key, phase)`` with phase ``"before"``/``"after"`` around every block of a variant;
#: returns a reading (e.g. GPU clocks) or ``None``. See :mod:`trtopt.benchmark.gpu_conditions`.
Monitor = Callable[[Hashable, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class TimedVariant:
    """One variant of a comparison.

    Attributes:
        key: Caller's identity of the variant (returned as the key of the result).
        runner: An active runner.
        feeds: Input name to array; axis 0 is the batch.
        batch_size: Samples per inference.
        label: Name used in messages (defaults to ``str(key)``).
    """

    key: Hashable
    runner: Any
    feeds: Mapping[str, np.ndarray]
    batch_size: int
    label: str = ""


@dataclass(frozen=True)
class RoundPlan:
    """How many rounds, and how much of each, every variant gets.

    Attributes:
        rounds: Number of rounds.
        block_s: Minimum seconds per variant per round (duration mode), else 0.
        min_n: Minimum iterations per block.
        max_n: Maximum iterations per block.
        counts: Exact iterations per round (count mode), else ``None``.
    """

    rounds: int
    block_s: float
    min_n: int
    max_n: int
    counts: tuple[int, ...] | None = None


def plan_rounds(cfg: BenchConfig, iteration_s: Mapping[str, float]) -> RoundPlan:
    """Split the per-variant budget into rounds.

    Count mode (``cfg.iterations``): ``min(cfg.rounds, iterations)`` rounds sharing the iterations.
    Duration mode: as many rounds (up to ``cfg.rounds``) as let the slowest variant run at least
    one iteration per round within ``cfg.min_duration_s``.

    Args:
        cfg: Timing settings.
        iteration_s: Variant label to its estimated seconds per iteration (from the warm-up).

    Raises:
        ConfigError: A zero budget, or too few counted iterations for ``cfg.min_rounds`` rounds (one line, with
            what would). A positive budget too short for them is extended to fit (with a warning).
    """
    if cfg.iterations is not None:
        r = min(cfg.rounds, cfg.iterations)
        if r < cfg.min_rounds:
            raise ConfigError(f"{cfg.iterations} timed iteration(s) are too few for {cfg.min_rounds} interleaved "
                              f"rounds: use --iterations {cfg.min_rounds} or more")
        base, extra = divmod(cfg.iterations, r)
        counts = tuple(base + (i < extra) for i in range(r))
        return RoundPlan(r, 0.0, 0, 0, counts)
    slowest, est = max(iteration_s.items(), key=lambda kv: kv[1])
    est = max(est, 1e-9)
    fit = math.floor(cfg.min_duration_s / est) if est > 0 else cfg.rounds
    r = min(cfg.rounds, fit, cfg.max_iterations)
    budget = cfg.min_duration_s
    if r < cfg.min_rounds:
        need = math.ceil(cfg.min_rounds * est * 1.2 * 100) / 100
        if cfg.min_duration_s <= 0:
            raise ConfigError(f"a time budget of {cfg.min_duration_s:g} s per variant is too short for "
                              f"{cfg.min_rounds} interleaved rounds (one iteration of '{slowest}' takes "
                              f"{1e3 * est:.1f} ms): use --min-duration {need:g} or more")
        # The budget is a minimum (as trtexec's --duration): a slow variant, or a loaded machine, gets the
        # fewest rounds a comparison needs rather than a failed run after all the work before the timing.
        log.warning("a time budget of %g s per variant is too short for %d interleaved rounds (one iteration of "
                    "'%s' takes %.1f ms): timing %g s per variant instead", cfg.min_duration_s, cfg.min_rounds,
                    slowest, 1e3 * est, need)
        r, budget = cfg.min_rounds, need
    return RoundPlan(r, budget / r, max(1, math.ceil(cfg.min_iterations / r)), max(1, cfg.max_iterations // r))


def _cpu_block(fn: Callable[[], object], clock: Callable[[], int], min_n: int, max_n: int,
               min_s: float) -> tuple[list[float], float]:
    lat_ns: list[int] = []
    append = lat_ns.append
    limit = int(min_s * 1e9)
    start = clock()
    t1 = start
    while True:  # the same minimal body as timing._time_cpu (the overhead check compares it with a bare loop)
        t0 = clock()
        fn()
        t1 = clock()
        append(t1 - t0)
        n = len(lat_ns)
        if n >= max_n or (n >= min_n and t1 - start >= limit):
            break
    return [x * 1e-6 for x in lat_ns], (t1 - start) * 1e-9


def _gpu_block(fn: Callable[[], object], min_n: int, max_n: int, min_s: float) -> tuple[list[float], float]:
    return gpu_event_loop(fn, lambda n, secs: n >= max_n or (n >= min_n and secs >= min_s))


def _warmup(fn: Callable[[], object], n: int, gpu: bool, clock: Callable[[], int], probe_s: float) -> float:
    """Run the warm-up, then estimate seconds per iteration from up to 3 more calls (median).

    Why after the warm-up: the first calls carry lazy initialisation (a first FP16 call took 12 ms
    where later ones take 0.1 ms), which would make the round plan far too coarse. The probe
    stops early once it has used ``probe_s`` seconds (slow models); ``probe_s < 0``: no probe.
    """
    sync = None
    if gpu:
        import torch

        sync = torch.cuda.synchronize
    for _ in range(n):
        fn()
    times: list[int] = []
    start = clock()
    while probe_s >= 0 and len(times) < 3 and (not times or clock() - start < probe_s * 1e9):
        t0 = clock()
        fn()
        if sync:
            sync()
        times.append(clock() - t0)
    return float(np.median(times)) * 1e-9 if times else 0.0


def measure_interleaved(
    variants: Sequence[TimedVariant],
    cfg: BenchConfig | None = None,
    *,
    group: str = "",
    clock: Callable[[], int] = time.perf_counter_ns,
    monitor: Monitor | None = None,
) -> dict[Hashable, TimingResult]:
    """Time every variant of one comparison in interleaved rounds.

    Each variant is warmed up (``cfg.warmup`` iterations, also estimating its iteration time),
    then :func:`plan_rounds` picks the rounds; in each round the variants run in cyclic order
    from a random start (``cfg.seed``), each for its block (``min_duration_s / rounds`` seconds,
    at least ``ceil(min_iterations / rounds)`` iterations), or its share of ``cfg.iterations``.

    Args:
        variants: The comparison's variants (runners active, distinct keys).
        cfg: Timing settings (``BenchConfig()`` by default).
        group: Identity of the comparison, stored in every result (paired speedups need it).
        clock: Nanosecond clock for CPU runners (injectable for tests).
        monitor: Optional reading taken before and after every block (GPU conditions).

    Returns:
        Key to :class:`TimingResult` with ``method="interleaved"``, ``throughput_sps`` = median
        of ``round_sps`` and ``throughput_ci95`` its bootstrap interval (samples/s).

    Raises:
        InputError: Feeds do not match the batch size.
        ConfigError: A timing mode a runner cannot provide, or a budget too short for
            ``cfg.min_rounds`` rounds.
    """
    cfg = cfg or BenchConfig()
    if not variants:
        raise ConfigError("nothing to time: no variants")
    keys = [v.key for v in variants]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"variant keys must be distinct, got {keys}")
    fns, gpu, labels, modes = [], [], [], []
    for v in variants:
        _check_batch(v.feeds, v.batch_size)
        if runner_device(v.runner) == "cpu":
            if cfg.mode not in ("auto", "cpu"):
                raise ConfigError(f"timing mode '{cfg.mode}' needs a GPU runner; the {v.runner.backend} runner "
                                  "runs on the CPU")
            fn, mode = v.runner.prepare(v.feeds), "cpu"
        else:
            fn, mode = _gpu_callable(v.runner, v.feeds, cfg.mode)
        fns.append(fn)
        gpu.append(mode != "cpu")
        labels.append(v.label or str(v.key))
        modes.append(mode)
    probe = 0.2 * cfg.min_duration_s if cfg.iterations is None else -1.0  # count mode needs no estimate
    est = {lab: _warmup(fn, cfg.warmup, g, clock if not g else time.perf_counter_ns, probe)
           for fn, g, lab in zip(fns, gpu, labels)}
    plan = plan_rounds(cfg, est)
    rng = np.random.default_rng(cfg.seed)
    lat: list[list[float]] = [[] for _ in variants]
    spans: list[list[float]] = [[] for _ in variants]
    counts: list[list[int]] = [[] for _ in variants]
    readings: list[list[dict[str, Any]]] = [[] for _ in variants]
    k = len(variants)
    for r in range(plan.rounds):
        start = int(rng.integers(k))
        for i in [(start + j) % k for j in range(k)]:
            lo, hi = (plan.counts[r], plan.counts[r]) if plan.counts else (plan.min_n, plan.max_n)
            if monitor and (got := monitor(keys[i], "before")) is not None:
                readings[i].append(got)
            if gpu[i]:
                block, span = _gpu_block(fns[i], lo, hi, plan.block_s)
            else:
                block, span = _cpu_block(fns[i], clock, lo, hi, plan.block_s)
            if monitor and (got := monitor(keys[i], "after")) is not None:
                readings[i].append(got)
            lat[i] += block
            spans[i].append(span)
            counts[i].append(len(block))
    conds = {labels[i]: summarize_readings(readings[i]) for i in range(k)} if monitor else {}
    warnings = condition_warnings(conds)
    for w in warnings:
        log.warning("GPU conditions: %s", w)
    out: dict[Hashable, TimingResult] = {}
    for i, v in enumerate(variants):
        sps = [v.batch_size * n / s if s > 0 else math.inf for n, s in zip(counts[i], spans[i])]
        base = summarize(lat[i], v.batch_size, sum(spans[i]), mode=modes[i], threads=runner_threads(v.runner),
                         warmup=cfg.warmup, cv_threshold=cfg.cv_threshold, warn=False)
        finite = [x for x in sps if math.isfinite(x)]
        med, lo, hi = bootstrap_median_ci(finite) if finite else (math.inf, math.inf, math.inf)
        out[v.key] = replace(base, throughput_sps=med, method="interleaved", round_sps=tuple(sps),
                             throughput_ci95=(lo, hi), group=group,
                             conditions={**conds[labels[i]], "warnings": warnings} if monitor else {})
    shaky = [f"{labels[i]} {100 * out[v.key].cv:.1f}%" for i, v in enumerate(variants) if out[v.key].unstable]
    if shaky:  # one line for the whole comparison, not one per variant
        log.warning("unstable timing: latency CV above %.1f%% (%s); close other programs, pin clocks or time longer",
                    100 * cfg.cv_threshold, ", ".join(shaky))
    log.info("timed %d variant(s) in %d interleaved rounds (group %s)", k, plan.rounds, group or "-")
    return out


def time_comparison(
    entries: Sequence[tuple[Hashable, Any, str]],
    batch_sizes: Sequence[int],
    feeds_for: Callable[[Hashable, int], Mapping[str, np.ndarray]],
    cfg: BenchConfig,
    *,
    monitor: Monitor | str | None = "auto",
) -> dict[tuple[Hashable, int], TimingResult]:
    """Time every variant at every batch size; the variants of one batch size form one comparison.

    Args:
        entries: ``(key, active runner, label)`` per variant.
        batch_sizes: Batch sizes; each is its own interleaved group ``"b<size>"``.
        feeds_for: ``feeds_for(key, batch_size)`` -> that variant's inputs at that batch size.
        cfg: Timing settings.
        monitor: Reading around every block; ``"auto"`` = NVML when any runner is on a GPU
            (:class:`~trtopt.benchmark.gpu_conditions.NvmlMonitor`), else none.

    Returns:
        ``(key, batch_size)`` to its timing.
    """
    if monitor == "auto":
        monitor = NvmlMonitor() if any(runner_device(r) == "cuda" for _, r, _ in entries) else None
    out: dict[tuple[Hashable, int], TimingResult] = {}
    for bs in batch_sizes:
        group = [TimedVariant(key, runner, feeds_for(key, bs), bs, label) for key, runner, label in entries]
        if group:
            res = measure_interleaved(group, cfg, group=f"b{bs}", monitor=monitor)
            for tv in group:  # TensorRT variants: also trtexec's metrics, in its vocabulary
                if getattr(tv.runner, "backend", "") == "tensorrt":
                    res[tv.key] = replace(res[tv.key], trtexec=_trtexec_metrics(tv, cfg))
            out.update({(k, bs): t for k, t in res.items()})
    return out


def _trtexec_metrics(tv: TimedVariant, cfg: BenchConfig) -> dict[str, Any]:
    from trtopt.benchmark.trtexec_metrics import measure_trtexec_style

    try:
        return measure_trtexec_style(tv.runner, tv.feeds, tv.batch_size, duration_s=min(cfg.min_duration_s, 1.0) or 1.0,
                                     warmup=cfg.warmup)
    except ConfigError as exc:  # a runner without bound buffers: the interleaved numbers still stand
        log.warning("no trtexec metrics for %s: %s", tv.label or tv.key, exc)
        return {"error": str(exc)}
