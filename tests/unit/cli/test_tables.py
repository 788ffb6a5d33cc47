"""Console tables are never cut: fitted to a terminal's width (columns left out, cells folded), whole when piped."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from _helpers.paths import REPO_ROOT
from trtopt.benchmark.render import COLUMNS, OPTIONAL_COLUMNS, render_table, table_rows
from trtopt.cli.main import main
from trtopt.cli.tables import print_table

REPORT = REPO_ROOT / "bench" / "results" / "digits-demo" / "report.json"
LONG = "sparse24-int8-" + "x" * 140  # a variant (file stem) name longer than any terminal


def _report(tmp_path) -> Path:
    data = json.loads(REPORT.read_text())
    data["variants"][-1]["name"] = LONG
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


def test_piped_tables_are_printed_whole_at_their_own_width(tmp_path, capsys):
    assert main(["report", str(_report(tmp_path))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(LONG in ln for ln in lines)  # the long name on one line, not wrapped at 200 columns
    header = next(ln for ln in lines if "variant" in ln)
    assert "RTX engine (AOT, not timed)" in header and "speedup vs FP32 (95% CI)" in header
    assert "…" not in "\n".join(lines)


def _narrow(report: dict, width: int) -> tuple[list[str], str]:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=width, color_system=None)
    return print_table(con, render_table(report), OPTIONAL_COLUMNS), buf.getvalue()


def test_a_narrow_terminal_leaves_out_optional_columns_and_says_so():
    report = json.loads(REPORT.read_text())
    left, text = _narrow(report, 100)
    assert left and set(left) <= set(OPTIONAL_COLUMNS)
    assert all(len(ln) <= 100 for ln in text.splitlines()) and "…" not in text
    rows = {r[0]: r for r in table_rows(report)}  # the committed demo run's cells
    throughput, speedup = rows["fp32"][COLUMNS.index("samples/s (95% CI)")], rows["fp16"][-1]
    assert "(" in throughput and "(" in speedup  # cells with intervals: the widest ones
    for cell in ("sparse24-int8", "99.26% top1 (98.1–99.7)", throughput, speedup):
        assert cell in text  # what is shown is shown whole
    assert f"left out to fit 100 columns: {left[0]}" in " ".join(text.split())


def test_a_cell_wider_than_the_terminal_is_folded_not_cut(tmp_path):
    _, text = _narrow(json.loads(_report(tmp_path).read_text()), 80)
    assert all(len(ln) <= 80 for ln in text.splitlines()) and "…" not in text
    assert text.count("x") >= 140  # every character of the long name is there, folded over lines


def test_a_table_that_fits_is_printed_unchanged(tmp_path):
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=400, color_system=None)
    assert print_table(con, render_table(json.loads(REPORT.read_text())), OPTIONAL_COLUMNS) == []
    assert "RTX engine (AOT, not timed)" in buf.getvalue() and "left out" not in buf.getvalue()
