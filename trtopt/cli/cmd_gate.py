"""``trtopt gate REPORT.json --baseline BASELINE.json``: the regression gate for CI.

Exit codes: 0 every variant within budget, 1 regression (a table says what regressed),
2 bad input (missing/corrupt report, other schema version, different variants, bad option),
3 inconclusive (no regression, but an interval straddles a budget: re-run on a quieter machine
or time longer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fail (exit 1) when a report regresses against a baseline report beyond accuracy/throughput budgets"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``gate`` subcommand."""
    p = sub.add_parser("gate", help=HELP, description=HELP + ". Exit 0 within budget, 1 regression, 2 bad input, "
                       "3 inconclusive (a 95% interval straddles the budget: re-run on a quieter machine or time "
                       "longer).")
    p.add_argument("report", metavar="REPORT.json", type=Path, help="report to check (trtopt.report/1 or /2)")
    p.add_argument("--baseline", metavar="BASELINE.json", type=Path, required=True, help="baseline report")
    p.add_argument("--max-accuracy-drop", metavar="X", default="0.5",
                   help="allowed accuracy drop in metric points (percentage points), default 0.5")
    p.add_argument("--max-throughput-drop", metavar="P%", default="5%",
                   help="allowed throughput drop in percent of the baseline, default 5%%")
    p.add_argument("--overrides", metavar="FILE.toml", type=Path, default=None,
                   help="per-variant budgets: [defaults] and [variants.NAME] / [variants.\"NAME@BATCH\"] tables "
                        "with max_accuracy_drop, max_throughput_drop, skip")
    p.set_defaults(func=run)


def _fmt(v: float | None, digits: int, suffix: str = "", signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+,.{digits}f}{suffix}" if signed else f"{v:,.{digits}f}{suffix}"


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt gate``."""
    from rich.markup import escape
    from rich.table import Table

    from trtopt.benchmark.gate import Budget, Overrides, gate, load_overrides
    from trtopt.benchmark.report import load_report
    from trtopt.cli.args import parse_percent

    budget = Budget(max_accuracy_drop=parse_percent(args.max_accuracy_drop, "--max-accuracy-drop"),
                    max_throughput_drop=parse_percent(args.max_throughput_drop, "--max-throughput-drop"))
    overrides = load_overrides(args.overrides) if args.overrides else Overrides()
    report = load_report(args.report)
    result = gate(report, load_report(args.baseline), budget, overrides)
    from trtopt.cli import tables

    console = tables.console()  # a terminal's width, or (piped, CI) the table's own: no cell is cut
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    for name, lower in _user_metrics(report):
        console.print(f"[dim]acc columns: metric {escape(name)} in its own units; the accuracy budget applies to it "
                      f"({'a rise: lower is better' if lower else 'a drop: higher is better'})[/]")
    code = result.exit_code
    rows = {0: result.rows, 1: result.regressions, 3: result.inconclusive}[code]
    title = {0: "gate: all variants within budget", 1: "gate: REGRESSIONS",
             3: "gate: INCONCLUSIVE (noise cannot be told from regression)"}[code]
    table = Table(title=title)
    for col in ("variant", "backend", "batch", "baseline samples/s", "samples/s", "Δ throughput (95% CI)",
                "baseline acc", "acc", "Δ acc (95% CI)", "budget (acc pts / thr %)", "problem"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.backend, str(r.batch_size), _fmt(r.baseline_throughput, 1), _fmt(r.throughput, 1),
                      _fmt(r.throughput_change_pct, 1, "%", True) + _ci(r.throughput_change_ci, 1),
                      _fmt_acc(r.baseline_accuracy), _fmt_acc(r.accuracy),
                      _fmt_acc(r.accuracy_change, signed=True) + _ci(r.accuracy_change_ci, 2),
                      f"{r.budget.max_accuracy_drop:g} / {r.budget.max_throughput_drop:g}%",
                      escape("; ".join(r.problems or r.unsure) or "ok"))
    tables.print_table(console, table, ("backend", "budget (acc pts / thr %)", "baseline samples/s", "baseline acc",
                                        "batch"))
    if code == 1:
        console.print(f"[red]{len(result.regressions)} of {len(result.rows)} variant(s) regressed[/]")
    elif code == 3:
        console.print(f"[yellow]inconclusive: re-run on a quieter machine or time longer ({len(result.inconclusive)} "
                      f"of {len(result.rows)} variant(s) straddle their budget; none regressed)[/]")
    else:
        console.print(f"[green]{len(result.rows)} variant(s) within budget[/]")
    return code


def _fmt_acc(v: float | None, signed: bool = False) -> str:
    """Percent points with 2 decimals; a user's metric in 0..1 keeps 4 significant digits."""
    if v is None or abs(v) >= 1 or v == 0:
        return _fmt(v, 2, signed=signed)
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _user_metrics(report: dict) -> list[tuple[str, bool]]:
    """(name, lower is better) of the metrics given by reference (``pkg.mod:fn``) in a report."""
    seen = {}
    for v in report.get("variants", []):
        a = v.get("accuracy") or {}
        if a.get("ref"):
            seen[str(a.get("metric"))] = a.get("higher_is_better", True) is False
    return sorted(seen.items())


def _ci(ci: tuple[float, float] | None, digits: int) -> str:
    return "" if ci is None else f" ({ci[0]:+.{digits}f}…{ci[1]:+.{digits}f})"
