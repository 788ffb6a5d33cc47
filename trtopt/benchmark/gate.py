"""Regression gate: compare a report with a baseline report under accuracy/throughput budgets.

Used by ``trtopt gate`` in GPU CI. Three outcomes per check: *regression* only when
the whole 95 % interval of the change lies beyond the budget, *pass* when it lies within, and
*inconclusive* (exit code 3: re-run on a quieter machine or time longer) when it straddles the
budget. Throughput intervals come from the per-round throughputs of both runs (two-sample
bootstrap of the ratio of medians, :func:`trtopt.benchmark.stats.ratio_of_medians_ci`);
accuracy intervals from the images whose top-1 correctness flipped between the runs
(:func:`trtopt.benchmark.stats.paired_accuracy_change_ci`: one image of 540 is 0.19 points and
not evidence of a drop). A report or baseline without them (schema ``trtopt.report/1``, a custom
metric) is compared on point estimates, and the gate says so in a note.

A variant regresses when its accuracy drops by more than
``max_accuracy_drop`` metric points, its throughput drops by more than
``max_throughput_drop`` percent, it stopped running (``ok`` in the baseline, ``failed`` or
``skipped`` now), or it fell outside its fidelity tolerance (``fidelity_ok`` false, e.g. below the
default cosine 0.99 / top-1 agreement 99 %) where the baseline was
within it. Budgets can be overridden per variant in a TOML file::

    [defaults]
    max_accuracy_drop = 0.5      # points (percent accuracy)
    max_throughput_drop = 5      # percent

    [variants.int8]              # every batch size of variant "int8"
    max_accuracy_drop = 1.0

    [variants."fp16@8"]          # only batch size 8
    max_throughput_drop = 10

    [variants.sparse24-fp32]
    skip = true                  # not gated (may also be absent from either report)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trtopt.benchmark.report import as_float, variant_key
from trtopt.benchmark.stats import paired_accuracy_change_ci, ratio_of_medians_ci, unpack_bits
from trtopt.errors import ConfigError, GateFailure, GateInconclusive, InputError


@dataclass(frozen=True)
class Budget:
    """Allowed regression of one variant.

    Attributes:
        max_accuracy_drop: Largest allowed accuracy drop, in metric points (percentage points).
        max_throughput_drop: Largest allowed throughput drop, in percent of the baseline.
        skip: Do not gate this variant.
    """

    max_accuracy_drop: float = 0.5
    max_throughput_drop: float = 5.0
    skip: bool = False

    def __post_init__(self) -> None:
        for k in ("max_accuracy_drop", "max_throughput_drop"):
            v = getattr(self, k)
            if not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"{k} must be a non-negative number, got {v!r}")
        if self.max_throughput_drop >= 100:
            raise ConfigError(f"max_throughput_drop is a percentage below 100, got {self.max_throughput_drop}")


@dataclass(frozen=True)
class Overrides:
    """Per-variant budgets read from TOML (see module docstring)."""

    defaults: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def budget_for(self, base: Budget, name: str, batch_size: int) -> Budget:
        """Return the budget of ``name`` at ``batch_size`` (most specific table wins)."""
        b = replace(base, **self.defaults)
        for key in (name, f"{name}@{batch_size}"):
            if key in self.variants:
                b = replace(b, **self.variants[key])
        return b


_BUDGET_KEYS = {"max_accuracy_drop", "max_throughput_drop", "skip"}


def load_overrides(path: str | os.PathLike[str]) -> Overrides:
    """Read a gate overrides TOML file.

    Raises:
        InputError: Missing or unparsable file.
        ConfigError: Unknown tables or keys.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"overrides file {p} is a directory" if p.is_dir() else f"overrides file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse overrides {p}: {exc}") from None
    unknown = set(data) - {"defaults", "variants"}
    if unknown:
        raise ConfigError(f"unknown table(s) {sorted(unknown)} in {p} (known: defaults, variants)")
    tables = {"defaults": data.get("defaults", {}), **{f"variants.{k}": v for k, v in data.get("variants", {}).items()}}
    for where, table in tables.items():
        if not isinstance(table, dict) or set(table) - _BUDGET_KEYS:
            bad = sorted(set(table) - _BUDGET_KEYS) if isinstance(table, dict) else table
            raise ConfigError(f"[{where}] in {p}: unknown key(s) {bad} (known: {', '.join(sorted(_BUDGET_KEYS))})")
        replace(Budget(), **table)  # validates values now, with the file in the message's context
    return Overrides(defaults=dict(data.get("defaults", {})), variants=dict(data.get("variants", {})))


@dataclass(frozen=True)
class GateRow:
    """Verdict for one variant (name, backend, batch)."""

    name: str
    backend: str
    batch_size: int
    baseline_throughput: float | None
    throughput: float | None
    throughput_change_pct: float | None
    baseline_accuracy: float | None
    accuracy: float | None
    accuracy_change: float | None
    budget: Budget
    problems: tuple[str, ...] = ()
    unsure: tuple[str, ...] = ()
    throughput_change_ci: tuple[float, float] | None = None
    accuracy_change_ci: tuple[float, float] | None = None

    @property
    def regressed(self) -> bool:
        """Whether the variant is outside its budget."""
        return bool(self.problems)

    @property
    def inconclusive(self) -> bool:
        """Whether no check regressed but at least one interval straddles its budget."""
        return not self.problems and bool(self.unsure)


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`gate`: every gated row and notes (e.g. different GPUs)."""

    rows: list[GateRow]
    notes: list[str]

    @property
    def passed(self) -> bool:
        """Whether no variant regressed."""
        return not any(r.regressed for r in self.rows)

    @property
    def regressions(self) -> list[GateRow]:
        """Rows outside their budget."""
        return [r for r in self.rows if r.regressed]

    @property
    def inconclusive(self) -> list[GateRow]:
        """Rows that did not regress but whose interval straddles the budget."""
        return [r for r in self.rows if r.inconclusive]

    @property
    def exit_code(self) -> int:
        """0 within budget, 1 regression, 3 inconclusive (no regression, some interval straddles a budget)."""
        return 1 if self.regressions else (3 if self.inconclusive else 0)

    def raise_for_regressions(self) -> None:
        """Raise :class:`~trtopt.errors.GateFailure` (exit 1) or :class:`~trtopt.errors.GateInconclusive` (exit 3).

        GateFailure names every regressed variant; GateInconclusive is raised when nothing regressed
        but some check could not tell noise from regression.
        """
        if not self.passed:
            what = "; ".join(f"{r.name}@{r.batch_size} ({r.backend}): {', '.join(r.problems)}"
                             for r in self.regressions)
            raise GateFailure(f"{len(self.regressions)} variant(s) regressed: {what}")
        if self.inconclusive:
            what = "; ".join(f"{r.name}@{r.batch_size} ({r.backend}): {', '.join(r.unsure)}" for r in self.inconclusive)
            raise GateInconclusive(f"inconclusive: re-run on a quieter machine or time longer ({what})")


def _acc(v: dict[str, Any]) -> float | None:
    return as_float((v.get("accuracy") or {}).get("value")) if v.get("status") == "ok" else None


def _metric_name(v: dict[str, Any]) -> str:
    name = str((v.get("accuracy") or {}).get("metric") or "accuracy")
    return "accuracy" if name in ("top1", "top5") else f"metric {name}"


def _higher_is_better(v: dict[str, Any]) -> bool:
    """A user's metric with ``higher_is_better = False`` (an error rate) regresses when it rises."""
    return (v.get("accuracy") or {}).get("higher_is_better", True) is not False


def _fid_failed(v: dict[str, Any]) -> bool:
    return v.get("fidelity_ok") is False or bool(v.get("fidelity_violations"))


def _rounds(v: dict[str, Any]) -> list[float] | None:
    r = (v.get("timing") or {}).get("round_throughputs_sps") if v.get("status") == "ok" else None
    return [as_float(x) for x in r] if r else None


def _correct(v: dict[str, Any]) -> Any:
    a = v.get("accuracy") or {}
    if v.get("status") != "ok" or a.get("metric") != "top1" or not a.get("correct_bits") or not a.get("samples"):
        return None
    try:
        return unpack_bits(str(a["correct_bits"]), int(a["samples"]))
    except ValueError:
        return None


def _verdict(change: float, lo: float, hi: float, budget: float, what: str, unit: str) -> tuple[str, str]:
    """('regressed' | 'unsure' | '', message) for a change interval against ``-budget``."""
    ci = f"{change:+.2f}{unit} (95% CI {lo:+.2f}…{hi:+.2f})"
    if hi < -budget:
        return "regressed", f"{what} {ci} beyond the {budget:g}{unit} budget"
    if lo < -budget:
        return "unsure", f"{what} {ci} straddles the {budget:g}{unit} budget"
    return "", ""


def _compare(cur: dict[str, Any], base: dict[str, Any], budget: Budget) -> GateRow:
    problems, unsure = [], []
    tb, tc = as_float(base.get("throughput_sps")), as_float(cur.get("throughput_sps"))
    ab, ac = _acc(base), _acc(cur)
    if base["status"] == "ok" and cur["status"] != "ok":
        problems.append(f"{cur['status']}: {cur.get('reason') or 'no reason given'}")
    tchange = 100.0 * (tc / tb - 1.0) if tb and tc is not None else None
    rb, rc = _rounds(base), _rounds(cur)
    tci = None
    if tchange is not None and rb and rc and tb > 0:
        _, lo, hi = ratio_of_medians_ci(rc, rb)
        tci = (100.0 * (lo - 1.0), 100.0 * (hi - 1.0))
        kind, msg = _verdict(tchange, *tci, budget.max_throughput_drop, "throughput", "%")
        (problems if kind == "regressed" else unsure if kind else []).append(msg)
    elif tchange is not None and -tchange > budget.max_throughput_drop:
        problems.append(f"throughput -{-tchange:.1f}% > {budget.max_throughput_drop:g}% budget")
    achange = ac - ab if ab is not None and ac is not None else None
    cb, cc = _correct(base), _correct(cur)
    aci = None
    if achange is not None and cb is not None and cc is not None and cb.size == cc.size:
        lost, gained = int((cb & ~cc).sum()), int((~cb & cc).sum())
        ch, lo, hi = paired_accuracy_change_ci(lost, gained, int(cb.size))
        aci = (lo, hi)
        kind, msg = _verdict(ch, lo, hi, budget.max_accuracy_drop, "accuracy", " pts")
        (problems if kind == "regressed" else unsure if kind else []).append(
            f"{msg} ({lost} lost, {gained} gained of {cb.size})" if msg else msg)
    elif achange is not None and _higher_is_better(cur) and -achange > budget.max_accuracy_drop:
        unit = f" -{-achange:.2f} points" if _metric_name(cur) == "accuracy" else f" -{-achange:.4g}"
        problems.append(f"{_metric_name(cur)}{unit} > {budget.max_accuracy_drop:g} budget")
    elif achange is not None and not _higher_is_better(cur) and achange > budget.max_accuracy_drop:
        problems.append(f"{_metric_name(cur)} +{achange:.4g} (lower is better) > {budget.max_accuracy_drop:g} budget")
    if ab is not None and ac is None and cur["status"] == "ok":
        problems.append("accuracy missing (baseline had one)")
    if cur["status"] == "ok" and _fid_failed(cur) and not _fid_failed(base):
        bad = "; ".join(f"{o}: {', '.join(x)}" for o, x in (cur.get("fidelity_violations") or {}).items())
        problems.append(f"fidelity outside tolerance ({bad or 'fidelity_ok is false'})")
    name, backend, bs = variant_key(cur)
    return GateRow(name, backend, bs, tb, tc, tchange, ab, ac, achange, budget, tuple(problems), tuple(unsure),
                   tci, aci)


def _env_notes(report: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    def gpu(r: dict[str, Any]) -> str:
        gs = (r.get("environment") or {}).get("gpus") or []
        return gs[0].get("name", "?") if gs else "no GPU"

    def cpu(r: dict[str, Any]) -> str:
        return str(((r.get("environment") or {}).get("cpu") or {}).get("model"))

    notes = []
    if gpu(report) != gpu(baseline):
        notes.append(f"different GPU: report on {gpu(report)}, baseline on {gpu(baseline)} "
                     "(throughput across machines is not comparable)")
    if cpu(report) != cpu(baseline):
        notes.append(f"different CPU: report on {cpu(report)}, baseline on {cpu(baseline)} "
                     "(throughput across machines is not comparable)")
    return notes


def gate(report: dict[str, Any], baseline: dict[str, Any], budget: Budget | None = None,
         overrides: Overrides | None = None) -> GateResult:
    """Compare ``report`` with ``baseline``.

    Args:
        report: Validated report dict (see :func:`~trtopt.benchmark.load_report`).
        baseline: Validated baseline report dict.
        budget: Default budget (command-line values).
        overrides: Per-variant budgets.

    Returns:
        The verdict per variant.

    Raises:
        InputError: The reports do not hold the same (non-skipped) variants.
    """
    budget, overrides = budget or Budget(), overrides or Overrides()
    cur = {variant_key(v): v for v in report["variants"]}
    base = {variant_key(v): v for v in baseline["variants"]}

    def gated(k: tuple[str, str, int]) -> bool:
        return not overrides.budget_for(budget, k[0], k[2]).skip

    fmt = lambda keys: ", ".join(f"{n}/{b}@{s}" for n, b, s in sorted(keys))  # noqa: E731
    missing = [k for k in base if k not in cur and gated(k)]
    extra = [k for k in cur if k not in base and gated(k)]
    if missing or extra:
        parts = ([f"missing from the report: {fmt(missing)}"] if missing else []) + (
            [f"not in the baseline: {fmt(extra)}"] if extra else [])
        raise InputError("report and baseline hold different variants (" + "; ".join(parts) +
                         "); re-run the baseline or mark them skip = true in --overrides")
    for k in (k for k in base if gated(k)):  # comparing different things is bad input, not a regression
        for attr in ("precision", "sparsity"):
            if cur[k].get(attr) != base[k].get(attr):
                raise InputError(f"variant {fmt([k])}: {attr} is {cur[k].get(attr)} in the report but "
                                 f"{base[k].get(attr)} in the baseline")
        mc, mb = ((v.get("accuracy") or {}).get("metric") for v in (cur[k], base[k]))
        if mc and mb and mc != mb:
            raise InputError(f"variant {fmt([k])}: accuracy metric is {mc} in the report but {mb} in the baseline")
    rows = [_compare(cur[k], base[k], overrides.budget_for(budget, k[0], k[2])) for k in base if gated(k)]
    notes = _env_notes(report, baseline)
    keys = [k for k in base if gated(k) and cur[k].get("status") == "ok" and base[k].get("status") == "ok"]
    point_t = [k for k in keys if not (_rounds(cur[k]) and _rounds(base[k]))]
    point_a = [k for k in keys if _acc(cur[k]) is not None and _acc(base[k]) is not None
               and (_correct(cur[k]) is None or _correct(base[k]) is None)]
    if point_t:
        notes.append(f"throughput of {fmt(point_t)} compared as point estimates: the report or the baseline has no "
                     "per-round throughputs (schema trtopt.report/1 or sequential timing), so noise cannot be told "
                     "from regression; re-run the baseline with this trtopt")
    if point_a:
        notes.append(f"accuracy of {fmt(point_a)} compared as point estimates: no per-sample top-1 results in the "
                     "report or the baseline (older schema or a custom metric)")
    for k in base:
        mb, mc = ((x.get("timing") or {}).get("mode") for x in (base[k], cur.get(k, {})))
        if gated(k) and mb and mc and mb != mc:
            notes.append(f"{k[0]}@{k[2]} ({k[1]}): timing mode {mc} vs baseline {mb} — not comparable")
    return GateResult(rows=rows, notes=notes)
