"""PNG plots of a report (needs matplotlib: a base dependency; skipped with a warning without it).

Three figures: throughput vs accuracy with the Pareto front, one panel per batch size (a front
across batch sizes compares unlike things), the latency distribution of every variant (from the
per-iteration latencies kept in memory), and throughput against batch size for batch sweeps.

Readable by construction: variants are told apart by colour and marker in a
legend instead of text annotations (which overlap when variants cluster); every point carries its
95 % intervals as error bars (throughput: bootstrap; accuracy: Wilson), and the accuracy axis spans
at least :data:`MIN_ACCURACY_SPAN` points, so one image of 540 (0.19 points) does not look like
a cliff; the batch axis is log-2 with plain-number ticks (1, 8, 32, not 2^3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtopt.fileio import atomic_path
from trtopt.log import get_logger
from trtopt.optional import is_installed

log = get_logger(__name__)

#: file names of the plots (a new report removes the ones it did not write: no stale PNG next to it)
PLOT_FILES = {"plot_pareto": "pareto.png", "plot_latency": "latency.png", "plot_batch": "throughput_vs_batch.png"}
#: the line shown on the console and in report.md when matplotlib is missing
SKIPPED_NOTE = "plots skipped: matplotlib is not installed (install it: {hint})"


def plots_available() -> bool:
    """Whether matplotlib can be imported (plots are written)."""
    return is_installed("matplotlib")


def skipped_note() -> str:
    """``plots skipped: ...`` with the install command that fits how trtopt was installed."""
    from trtopt.optional import install_hint

    return SKIPPED_NOTE.format(hint=install_hint("plot"))


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


#: smallest accuracy-axis span (points): narrower axes turn a one-image difference into a cliff
MIN_ACCURACY_SPAN = 2.0


def by_batch(variants: list[Any]) -> dict[int, list[Any]]:
    """Variants grouped by batch size, ascending (one Pareto panel each)."""
    out: dict[int, list[Any]] = {}
    for v in variants:
        out.setdefault(int(v.batch_size), []).append(v)
    return dict(sorted(out.items()))


def accuracy_limits(values: list[float], intervals: list[tuple[float, float] | None],
                    min_span: float = MIN_ACCURACY_SPAN) -> tuple[float, float]:
    """Y limits covering every value and interval, at least ``min_span`` wide, clipped to [0, 100.5].

    Args:
        values: Accuracies (percent).
        intervals: ``(low, high)`` per value, or ``None``.
        min_span: Smallest span in points.
    """
    lo = min([*values, *(i[0] for i in intervals if i)])
    hi = max([*values, *(i[1] for i in intervals if i)])
    pad = max(0.0, min_span - (hi - lo)) / 2 + 0.05 * max(hi - lo, min_span)
    lo, hi = lo - pad, hi + pad
    if hi > 100.5:
        lo, hi = lo - (hi - 100.5), 100.5
    return max(lo, 0.0), hi


def _accuracy_ci(v: Any) -> tuple[float, float] | None:
    from trtopt.benchmark.stats import wilson_interval

    a = v.accuracy
    if a is None or a.value is None or a.correct is None or not a.correct.size:
        return None
    return wilson_interval(int(a.correct.sum()), int(a.correct.size))


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


def _bar(value: float, interval: Any) -> list[list[float]] | None:
    """Error-bar lengths ``[[below], [above]]`` of ``interval`` around ``value`` (never negative), or ``None``."""
    if not interval:
        return None
    return [[max(0.0, value - float(interval[0]))], [max(0.0, float(interval[1]) - value)]]


def _save(fig: Any, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return dest


_MARKERS = "osD^vP*Xph<>"


def _pareto(plt: Any, variants: list[Any], dest: Path) -> Path | None:
    groups = {bs: [v for v in vs if _accuracy_of(v)[0] is not None] for bs, vs in by_batch(variants).items()}
    groups = {bs: vs for bs, vs in groups.items() if vs}
    if not groups:
        return None
    names = list(dict.fromkeys(f"{v.name} ({v.backend})" for vs in groups.values() for v in vs))
    style = {n: (f"C{i % 10}", _MARKERS[i % len(_MARKERS)]) for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(groups), figsize=(max(7.5, 5.5 * len(groups)), 4.2), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (bs, vs) in zip(axes[0], groups.items()):
        pts, cis, ylabel = [], [], ""
        for v in vs:
            acc, label = _accuracy_of(v)
            ylabel = ylabel or label
            x, ci, tci = v.timing.throughput_sps, _accuracy_ci(v), v.timing.throughput_ci95
            pts.append((x, acc))
            cis.append(ci)
            color, marker = style[f"{v.name} ({v.backend})"]
            xerr = _bar(x, tci)
            yerr = _bar(acc, ci)
            handles[f"{v.name} ({v.backend})"] = ax.errorbar(x, acc, xerr=xerr, yerr=yerr, fmt=marker, color=color,
                                                              ms=7, capsize=3, lw=1)
        front = pareto_front(pts)
        (line,) = ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--o", color="0.4", lw=1, ms=14,
                          mfc="none", zorder=0)  # rings: a one-point front stays visible
        handles["Pareto front (not dominated)"] = line
        ax.set_ylim(*accuracy_limits([p[1] for p in pts], cis))
        ax.set_xlabel("throughput (samples/s)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"batch {bs}")
        ax.grid(alpha=0.3)
    fig.suptitle("throughput vs accuracy (error bars: 95 % intervals)")
    ncol = min(3, len(handles))
    rows = (len(handles) + ncol - 1) // ncol
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
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
    sizes = sorted({b for s in series.values() for b, _ in s})
    ax.set_xticks(sizes, [str(b) for b in sizes])  # plain numbers, not 2^k
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (samples/s)")
    ax.legend(fontsize=8)
    ax.set_title("throughput vs batch size")
    try:
        return _save(fig, dest)
    finally:
        plt.close(fig)


def write_plots(report: Any, out_dir: Path, failed: list[str] | None = None) -> dict[str, Path]:
    """Write the PNG plots of ``report`` into ``out_dir``; a plot that fails is a warning, never an error.

    Args:
        report: A :class:`~trtopt.benchmark.report.Report` (live objects: latencies are needed).
        out_dir: Destination folder.
        failed: When given, receives one ``"pareto.png: ValueError: ..."`` line per plot that failed.

    Returns:
        ``plot_pareto`` / ``plot_latency`` / ``plot_batch`` to path, for the plots that apply and were
        written; empty without matplotlib.
    """
    if not plots_available():
        log.warning(skipped_note())
        return {}
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = _ok(report)
    out: dict[str, Path] = {}
    for key, fn in (("plot_pareto", _pareto), ("plot_latency", _latency), ("plot_batch", _batch)):
        before = set(plt.get_fignums())
        try:
            path = fn(plt, variants, Path(out_dir) / PLOT_FILES[key])
        except Exception as exc:  # matplotlib raises many types; the report is written whatever a plot does
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            line = f"{PLOT_FILES[key]}: {type(exc).__name__}: {why}"
            log.warning("plot not written: %s", line)
            if failed is not None:
                failed.append(line)
            continue
        if path is not None:
            out[key] = path
    return out
