"""``trtopt report A.json [B.json]``: show one report, or compare two runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show a benchmark report, or compare two reports side by side (A vs B)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser("report", help=HELP, description=HELP)
    p.add_argument("reports", metavar="REPORT.json", type=Path, nargs="+", help="one or two report.json files")
    p.add_argument("--markdown", action="store_true", help="print Markdown instead of a rich table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt report``."""
    from rich.markup import escape
    from rich.table import Table

    from trtopt.benchmark.render import (
        COMPARE_COLUMNS,
        OPTIONAL_COLUMNS,
        _md_table,
        compare_rows,
        render_markdown,
        render_table,
    )
    from trtopt.benchmark.report import load_report
    from trtopt.cli import tables
    from trtopt.errors import ConfigError

    if len(args.reports) > 2:
        raise ConfigError(f"give one report to show or two to compare, got {len(args.reports)}")
    data = [load_report(p) for p in args.reports]
    console = tables.console()  # a terminal's width, or (piped, CI) the table's own: no cell is cut
    if len(data) == 1:
        if args.markdown:
            print(render_markdown(data[0]))
        else:
            tables.print_table(console, render_table(data[0]), OPTIONAL_COLUMNS)
        return 0
    rows = compare_rows(data[0], data[1])
    if args.markdown:
        print("\n".join(_md_table(list(COMPARE_COLUMNS), rows)))
        return 0
    table = Table(title=f"A = {args.reports[0]}   B = {args.reports[1]}")
    for i, c in enumerate(COMPARE_COLUMNS):
        table.add_column(c, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    tables.print_table(console, table)
    for label, d in (("A", data[0]), ("B", data[1])):
        g = (d["environment"].get("gpus") or [{}])[0].get("name", "no GPU")
        console.print(f"[dim]{label}: created {d['created']}, CPU {d['environment'].get('cpu', {}).get('model')}, "
                      f"GPU {g}[/]")
    return 0
