"""PNG plots of a report (needs matplotlib, the ``plot`` extra; silently skipped without it).

Three figures: a throughput-vs-accuracy scatter with the Pareto front marked, the latency
distribution of every variant (from the per-iteration latencies kept in memory), and
throughput against batch size for batch sweeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtopt._optional import is_installed
from trtopt.fileio import atomic_path
from trtopt.log import get_logger

log = get_logger(__name__)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Return indices of points not dominated in (throughput up, accuracy up).

    Args:
        points: ``(throughput, accuracy)`` pairs.

    Returns:
        Indices on the front, sorted by throughput.
    """
    front = []
    for i, (t, a) in enumerate(points):
        dominated = any((t2 >= t and a2 >= a) and (t2 > t or a2 > a) for j, (t2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _ok(report: Any) -> list[Any]:
    return [v for v in report.variants if v.status == "ok" and v.timing is not None]


def _accuracy_of(v: Any) -> tuple[float | None, str]:
    a = v.accuracy
    if a is None:
        return None, ""
    if a.value is not None:
        return a.value, f"{a.metric} (%)"
    fid = next(iter(a.fidelity.values()), None)
    if fid and fid.get("top1_agreement") is not None:
        return fid["top1_agreement"], "top-1 agreement with FP32 (%)"
    return None, ""


def _save(fig: Any, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return dest


def _pareto(plt: Any, variants: list[Any], dest: Path) -> Path | None:
    pts, labels, ylabel = [], [], ""
    for v in variants:
        acc, label = _accuracy_of(v)
        if acc is not None:
            pts.append((v.timing.throughput_sps, acc))
            labels.append(f"{v.name} b{v.batch_size}")
            ylabel = ylabel or label
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for (x, y), lab in zip(pts, labels):
        ax.annotate(lab, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--o", color="tab:red", mfc="none", ms=10,
            label="Pareto front (not dominated)")
    ax.set_xlabel("throughput (samples/s)")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("throughput vs accuracy")
    try:
        return _save(fig, dest)
    finally:
        plt.close(fig)


def _latency(plt: Any, variants: list[Any], dest: Path) -> Path | None:
    data = [(f"{v.name} b{v.batch_size}", v.timing.latencies_ms) for v in variants if len(v.timing.latencies_ms)]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(data)), 4))
    ax.boxplot([d[1] for d in data], showfliers=True, whis=(1, 99))
    ax.set_xticks(range(1, len(data) + 1), [d[0] for d in data], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("latency per iteration (ms)")
    ax.set_title("latency distribution (whiskers p1–p99)")
    try:
        return _save(fig, dest)
    finally:
        plt.close(fig)


def _batch(plt: Any, variants: list[Any], dest: Path) -> Path | None:
    series: dict[str, list[tuple[int, float]]] = {}
    for v in variants:
        series.setdefault(f"{v.name} ({v.backend})", []).append((v.batch_size, v.timing.throughput_sps))
    if not any(len({b for b, _ in s}) > 1 for s in series.values()):
        return None  # no sweep
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in series.items():
        s.sort()
        ax.plot([b for b, _ in s], [t for _, t in s], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (samples/s)")
    ax.legend(fontsize=8)
    ax.set_title("throughput vs batch size")
    try:
        return _save(fig, dest)
    finally:
        plt.close(fig)


def write_plots(report: Any, out_dir: Path) -> dict[str, Path]:
    """Write the PNG plots of ``report`` into ``out_dir``.

    Args:
        report: A :class:`~trtopt.benchmark.report.Report` (live objects: latencies are needed).
        out_dir: Destination folder.

    Returns:
        ``plot_pareto`` / ``plot_latency`` / ``plot_batch`` to path, for the plots that apply;
        empty without matplotlib.
    """
    if not is_installed("matplotlib"):
        log.info("matplotlib not installed: no plots (pip install 'trtopt[plot]')")
        return {}
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = _ok(report)
    out: dict[str, Path] = {}
    for key, fn, name in (("plot_pareto", _pareto, "pareto.png"), ("plot_latency", _latency, "latency.png"),
                          ("plot_batch", _batch, "throughput_vs_batch.png")):
        path = fn(plt, variants, Path(out_dir) / name)
        if path is not None:
            out[key] = path
    return out
