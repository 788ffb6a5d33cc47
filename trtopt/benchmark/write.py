"""Write a benchmark report to its folder: ``report.json``, ``report.md`` and PNG plots.

This module sits above :mod:`trtopt.benchmark.report` (the data model), :mod:`trtopt.benchmark.render`
(Markdown) and :mod:`trtopt.benchmark.plots`, so none of them imports another to write a report.
"""

from __future__ import annotations

import os
from pathlib import Path

from trtopt.benchmark import plots as plotting
from trtopt.benchmark.render import render_markdown
from trtopt.benchmark.report import Report, check_schema
from trtopt.fileio import atomic_write_json, atomic_write_text


def write_report(report: Report, out_dir: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` first, then (with matplotlib) PNG plots, each atomically.

    The report never depends on its plots: both files are written before any plot is drawn, and a plot
    that fails is a warning (named in ``report.md``), never an error. Plots this run did not write
    (``plots=False``, no matplotlib, a plot that does not apply or failed) are removed from ``out_dir``
    so no stale PNG from an older run sits next to the new report; without matplotlib ``report.md``
    says ``plots skipped`` and how to install it.

    Args:
        report: The report (finalized here if it was not).
        out_dir: Output folder (created).
        plots: Also write plots when matplotlib is importable.

    Returns:
        Kind (``json``, ``markdown``, ``plot_*``) to path.

    Raises:
        InputError: The report does not validate against its schema (a bug, not a user error).
    """
    out = Path(out_dir)
    if any(v.vs_fp32.get("baseline", "unset") == "unset" for v in report.variants):
        report.finalize()
    data = report.to_dict()
    check_schema(data, "generated report")
    paths: dict[str, Path] = {"json": atomic_write_json(out / "report.json", data)}
    paths["markdown"] = atomic_write_text(out / "report.md", render_markdown(data))
    figures: dict[str, Path] = {}
    failed: list[str] = []
    note = None
    if plots:
        figures = plotting.write_plots(report, out, failed)
        note = plotting.skipped_note() if not plotting.plots_available() else (
            "plots not written: " + "; ".join(failed) if failed else None)
    for key, name in plotting.PLOT_FILES.items():  # a PNG from an older run must not sit next to this report
        if key not in figures:
            (out / name).unlink(missing_ok=True)
    if figures or note:
        atomic_write_text(out / "report.md", render_markdown(data, plots=figures, plot_note=note))
    return {**paths, **figures}
