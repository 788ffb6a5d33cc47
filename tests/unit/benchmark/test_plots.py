"""Plots people can read: a Pareto panel per batch size, no overlapping annotations,
intervals on both axes, an accuracy axis that does not turn one image into a cliff, plain batch ticks."""

from __future__ import annotations

import numpy as np
import pytest

from trtopt.benchmark import plots
from trtopt.benchmark.accuracy import AccuracyResult
from trtopt.benchmark.plots import accuracy_limits, by_batch
from trtopt.benchmark.report import VariantResult
from trtopt.benchmark.stats import wilson_interval
from trtopt.benchmark.timing import summarize


def _v(name, tput, wrong, batch):
    correct = np.ones(540, bool)
    correct[:wrong] = False
    t = summarize(np.full(10, 1e3 * batch / tput), batch)
    from dataclasses import replace

    t = replace(t, throughput_ci95=(0.95 * tput, 1.05 * tput))
    a = AccuracyResult(metric="top1", value=100 * correct.mean(), samples=540, correct=correct)
    return VariantResult(name, "onnxruntime", "fp32", "dense", batch, t, a, None, "ok", "")


VARIANTS = [_v("fp32", 1000, 20, 8), _v("int8", 1900, 21, 8), _v("fp16", 1200, 20, 8),
            _v("fp32", 4000, 20, 32), _v("int8", 7000, 21, 32)]


def test_accuracy_axis_spans_at_least_two_points_and_covers_the_intervals():
    lo, hi = accuracy_limits([96.30, 96.11], [None, None])  # one image of 540 apart
    assert hi - lo >= 2.0 and lo < 96.11 and hi > 96.30
    ci = wilson_interval(520, 540)
    lo, hi = accuracy_limits([96.30], [ci])
    assert lo <= ci[0] and hi >= ci[1]
    assert accuracy_limits([99.9], [(99.3, 100.0)])[1] <= 100.5


def test_pareto_has_one_panel_per_batch_size_with_error_bars_and_no_annotations(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, dest: figs.append(fig) or dest)
    monkeypatch.setattr(plt, "close", lambda fig: None)
    assert list(by_batch(VARIANTS)) == [8, 32]
    plots._pareto(plt, VARIANTS, tmp_path / "p.png")
    axes = figs[0].axes
    assert [ax.get_title() for ax in axes] == ["batch 8", "batch 32"]  # batch sizes never share a front
    assert all(not ax.texts for ax in axes)  # names are in the legend: nothing to overlap
    assert figs[0].legends and {t.get_text() for t in figs[0].legends[0].get_texts()} >= {"fp32 (onnxruntime)",
                                                                                         "int8 (onnxruntime)"}
    lo, hi = axes[0].get_ylim()
    assert hi - lo >= 2.0  # 96.30 vs 96.11 % is not a cliff
    assert len(axes[0].containers) == 3  # one errorbar container per variant at batch 8
    plots._batch(plt, VARIANTS, tmp_path / "b.png")
    labels = [t.get_text() for t in figs[1].axes[0].get_xticklabels()]
    assert labels == ["8", "32"]


def test_a_variant_right_on_every_sample_is_plotted_with_its_interval(tmp_path):
    pytest.importorskip("matplotlib")
    every = [_v("fp32", 1000, 0, 8), _v("int8", 1900, 1, 8)]  # 540 of 540: the interval ends at 100 %
    paths = plots.write_plots(type("R", (), {"variants": every})(), tmp_path)
    assert paths["plot_pareto"].read_bytes()[:4] == b"\x89PNG"


def _small_report():
    from trtopt.benchmark.report import Report, VariantResult
    from trtopt.benchmark.timing import TimingResult

    t = TimingResult.__new__(TimingResult)
    return Report(environment={}, workload={"name": "m"},
                  variants=[VariantResult("fp32", "onnxruntime", "fp32", status="skipped", reason="test")]), t


def test_stale_plots_are_removed_and_a_missing_matplotlib_is_said(tmp_path, monkeypatch):
    import trtopt.benchmark.plots as plots
    from trtopt.benchmark.write import write_report

    for name in plots.PLOT_FILES.values():
        (tmp_path / name).write_bytes(b"old png")
    monkeypatch.setattr(plots, "plots_available", lambda: False)
    report, _ = _small_report()
    write_report(report, tmp_path)
    assert not any((tmp_path / n).exists() for n in plots.PLOT_FILES.values())
    md = (tmp_path / "report.md").read_text()
    assert "plots skipped" in md and "matplotlib" in md
