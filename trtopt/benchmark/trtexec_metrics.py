"""trtexec's vocabulary for TensorRT variants, with trtexec's own definitions.

So users can put trtopt next to ``trtexec --loadEngine=...`` (TensorRT developer guide,
"trtexec > Performance metrics"; ``samples/common/sampleReporting.cpp``):

* **Throughput** (qps): queries (inferences, one batch each) / Total Host Walltime.
* **Latency** (trtexec's "Host Latency"): H2D Latency + GPU Compute Time + D2H Latency of one query.
* **Enqueue Time**: host time to enqueue one query (``execute_async_v3``); above the GPU Compute
  Time the GPU starves and throughput is bound by the host.
* **H2D Latency** / **D2H Latency**: host-to-device copy of the inputs / device-to-host copy of the
  outputs of one query.
* **GPU Compute Time**: GPU time of the kernels of one query.
* **Total Host Walltime**: from the first query's enqueue (after warm-up) to the last one's completion.
* **Total GPU Compute Time**: sum of the GPU Compute Times.

Each per-query metric is summarized as trtexec prints it: min, max, mean, median (mean of the two
middle values for an even count) and percentile(p) = the ``n - 1 - floor((1 - p/100) n)``-th
smallest value (trtexec's ``findPercentile``; not numpy's interpolation).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trtopt.errors import ConfigError

PER_QUERY = ("latency", "enqueue_time", "h2d_latency", "gpu_compute_time", "d2h_latency")
#: trtopt key -> the label trtexec prints
LABELS = {"throughput_qps": "Throughput", "latency": "Latency", "enqueue_time": "Enqueue Time",
          "h2d_latency": "H2D Latency", "gpu_compute_time": "GPU Compute Time", "d2h_latency": "D2H Latency",
          "total_host_walltime_s": "Total Host Walltime", "total_gpu_compute_time_s": "Total GPU Compute Time"}
PERCENTILES = (90, 95, 99)


def trtexec_percentile(sorted_ms: Sequence[float], p: float) -> float:
    """Percentile of an ascending sequence as trtexec's ``findPercentile`` computes it (``inf`` when empty)."""
    n = len(sorted_ms)
    if n == 0:
        return math.inf
    # float32 as in trtexec's C++ (in float64, (1 - 0.9) * 10 = 0.99999... would exclude 0 instead of 1)
    f = np.float32
    exclude = int((f(1) - f(p) / f(100)) * f(n))
    return float(sorted_ms[max(n - 1 - exclude, 0)])


def perf_result(times_ms: Sequence[float]) -> dict[str, float]:
    """``min``, ``max``, ``mean``, ``median``, ``p90``, ``p95``, ``p99`` (ms) as trtexec computes them."""
    a = np.sort(np.asarray(times_ms, dtype=np.float64))
    if a.size == 0:
        raise ValueError("perf_result needs at least one time")
    m = a.size // 2
    median = float(a[m]) if a.size % 2 else float((a[m - 1] + a[m]) / 2)
    out = {"min": float(a[0]), "max": float(a[-1]), "mean": float(a.mean()), "median": median}
    out.update({f"p{p}": trtexec_percentile(a, p) for p in PERCENTILES})
    return out


def trtexec_summary(h2d_ms: Sequence[float], compute_ms: Sequence[float], d2h_ms: Sequence[float],
                    enqueue_ms: Sequence[float], walltime_s: float, batch_size: int) -> dict[str, Any]:
    """The trtexec performance summary from per-query times.

    Args:
        h2d_ms: H2D Latency per query (ms).
        compute_ms: GPU Compute Time per query (ms), same length.
        d2h_ms: D2H Latency per query (ms), same length.
        enqueue_ms: Enqueue Time per query (ms), same length.
        walltime_s: Total Host Walltime (s).
        batch_size: Samples per query (trtexec counts queries; trtopt also reports samples/s).

    Returns:
        ``throughput_qps``, ``samples_per_s``, ``queries``, per-query metrics (:data:`PER_QUERY`, each a
        :func:`perf_result`), ``total_host_walltime_s``, ``total_gpu_compute_time_s``.

    Raises:
        ValueError: Different lengths, no queries, or a non-positive walltime.
    """
    n = len(compute_ms)
    if n == 0 or not len(h2d_ms) == len(d2h_ms) == len(enqueue_ms) == n or walltime_s <= 0:
        raise ValueError("trtexec_summary needs the same number (> 0) of every per-query time and a walltime > 0")
    h2d, comp, d2h = (np.asarray(x, dtype=np.float64) for x in (h2d_ms, compute_ms, d2h_ms))
    out: dict[str, Any] = {"queries": n, "throughput_qps": n / walltime_s, "samples_per_s": n * batch_size / walltime_s}
    out["latency"] = perf_result(h2d + comp + d2h)
    out["enqueue_time"] = perf_result(enqueue_ms)
    out["h2d_latency"] = perf_result(h2d)
    out["gpu_compute_time"] = perf_result(comp)
    out["d2h_latency"] = perf_result(d2h)
    out["total_host_walltime_s"] = float(walltime_s)
    out["total_gpu_compute_time_s"] = float(comp.sum() / 1e3)
    return out


_NUM = r"([-+0-9.eE]+|inf|nan)"


def parse_trtexec_log(text: str) -> dict[str, Any]:
    """Read trtexec's "Performance summary" lines back into :func:`trtexec_summary`'s layout.

    Recognised: ``Throughput: X qps``, ``<Metric>: min = a ms, max = b ms, mean = c ms, median = d ms,
    percentile(90%) = e ms, ...`` for Latency / Enqueue Time / H2D Latency / GPU Compute Time /
    D2H Latency, ``Total Host Walltime: X s`` and ``Total GPU Compute Time: X s``.

    Raises:
        ValueError: No ``Throughput`` line (not a trtexec benchmark log).
    """
    out: dict[str, Any] = {}
    m = re.search(rf"Throughput:\s*{_NUM}\s*qps", text)
    if not m:
        raise ValueError("no 'Throughput: ... qps' line: not a trtexec performance summary")
    out["throughput_qps"] = float(m.group(1))
    for key in PER_QUERY:
        line = re.search(rf"\]\s*{re.escape(LABELS[key])}:\s*(min = .*)", text) or \
            re.search(rf"^\s*{re.escape(LABELS[key])}:\s*(min = .*)", text, re.M)
        if not line:
            continue
        body = line.group(1)
        vals = {k: float(v) for k, v in re.findall(rf"(min|max|mean|median) = {_NUM}", body)}
        vals.update({f"p{int(float(p))}": float(v) for p, v in re.findall(rf"percentile\(([0-9.]+)%\) = {_NUM}", body)})
        out[key] = vals
    for key in ("total_host_walltime_s", "total_gpu_compute_time_s"):
        m = re.search(rf"{re.escape(LABELS[key])}:\s*{_NUM}\s*s", text)
        if m:
            out[key] = float(m.group(1))
    return out


def side_by_side(trtopt: Mapping[str, Any], trtexec: Mapping[str, Any], stat: str = "median") -> list[list[str]]:
    """Rows ``[metric, trtopt, trtexec]`` for the docs' comparison table (``stat`` of per-query metrics)."""
    rows = [["Throughput (qps)", f"{trtopt['throughput_qps']:.1f}", f"{trtexec.get('throughput_qps', math.nan):.1f}"]]
    for key in PER_QUERY:
        a, b = (trtopt.get(key) or {}).get(stat), (trtexec.get(key) or {}).get(stat)
        rows.append([f"{LABELS[key]} ({stat}, ms)", "—" if a is None else f"{a:.4f}", "—" if b is None else f"{b:.4f}"])
    for key in ("total_host_walltime_s", "total_gpu_compute_time_s"):
        a, b = trtopt.get(key), trtexec.get(key)
        rows.append([f"{LABELS[key]} (s)", "—" if a is None else f"{a:.3f}", "—" if b is None else f"{b:.3f}"])
    return rows


def measure_trtexec_style(runner: Any, feeds: Mapping[str, np.ndarray], batch_size: int,
                          duration_s: float = 1.0, warmup: int = 10) -> dict[str, Any]:
    """Time a TensorRT runner the way trtexec does by default (with H2D/D2H) and summarize in its terms.

    Every query: H2D of the inputs from pinned host buffers, the enqueue (host-timed), D2H of the
    outputs into pinned host buffers, each bracketed by CUDA events on the current stream; queries
    are not synchronized one by one (the host runs ahead as trtexec's does). Needs a GPU.

    Args:
        runner: An active TensorRT runner (its ``prepare`` binds device buffers).
        feeds: Host inputs at ``batch_size``.
        batch_size: Samples per query.
        duration_s: Timed seconds (at least 10 queries).
        warmup: Untimed queries first.

    Returns:
        :func:`trtexec_summary`.

    Raises:
        ConfigError: Not a TensorRT runner, or it does not expose its bound buffers.
    """
    if getattr(runner, "backend", "") != "tensorrt":
        raise ConfigError("trtexec metrics apply to TensorRT variants only")
    import torch  # GPU path only

    enqueue = runner.prepare(feeds)
    bound = getattr(runner, "_state", {}).get("bound")  # (device inputs, device outputs) bound by prepare()
    if not bound:
        raise ConfigError("this TensorRT runner does not expose its bound device buffers")
    dev_in, dev_out = bound
    host_in = {k: torch.from_numpy(np.ascontiguousarray(feeds[k])).pin_memory() for k in dev_in}
    host_out = {k: torch.empty(v.shape, dtype=v.dtype).pin_memory() for k, v in dev_out.items()}

    def query(events: list | None, enq: list | None) -> None:
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)] if events is not None else None
        if ev:
            ev[0].record()
        for k, t in dev_in.items():
            t.copy_(host_in[k], non_blocking=True)
        if ev:
            ev[1].record()
        t0 = time.perf_counter()
        enqueue()
        if enq is not None:
            enq.append((time.perf_counter() - t0) * 1e3)
        if ev:
            ev[2].record()
        for k, t in dev_out.items():
            host_out[k].copy_(t, non_blocking=True)
        if ev:
            ev[3].record()
            events.append(ev)

    for _ in range(warmup):
        query(None, None)
    torch.cuda.synchronize()
    events: list = []
    enq: list[float] = []
    start = time.perf_counter()
    while len(events) < 10 or time.perf_counter() - start < duration_s:
        query(events, enq)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    h2d = [e[0].elapsed_time(e[1]) for e in events]
    comp = [e[1].elapsed_time(e[2]) for e in events]
    d2h = [e[2].elapsed_time(e[3]) for e in events]
    return trtexec_summary(h2d, comp, d2h, enq, wall, batch_size)
