"""Human-readable views of a report: a ``rich`` table, Markdown, and A-vs-B comparisons."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtopt.benchmark.report import as_float, variant_key


def _data(report: Any) -> dict[str, Any]:
    return report if isinstance(report, dict) else report.to_dict()


def fmt_num(value: Any, digits: int = 1, suffix: str = "") -> str:
    """Format a report number; ``None`` becomes an em dash."""
    if value is None:
        return "—"
    return f"{as_float(value):,.{digits}f}{suffix}"


def fmt_delta(value: Any, digits: int = 2) -> str:
    """Format a signed difference."""
    return "—" if value is None else f"{as_float(value):+.{digits}f}"


def fmt_speedup(vs: Mapping[str, Any]) -> str:
    """The speedup cell: ``1.23× (1.15–1.31)``.

    ``≈1.0× (0.93–1.07)`` when the 95 % interval contains 1.0 (not significant); ``1.23×`` for a
    point estimate (older reports, sequential timing).
    """
    if vs.get("speedup") is None:
        return "—"
    s, ci = as_float(vs["speedup"]), vs.get("speedup_ci95")
    if ci is None or vs.get("speedup_method") == "same variant":
        return f"{s:.2f}×"
    lo, hi = (as_float(x) for x in ci)
    if vs.get("speedup_significant") is False:
        return f"≈{s:.1f}× ({lo:.2f}–{hi:.2f})"
    d = 2
    while d < 6 and 1.0 in (round(lo, d), round(hi, d)):  # a significant bound must not print as 1.00
        d += 1
    return f"{s:.{d}f}× ({lo:.{d}f}–{hi:.{d}f})"


def fmt_throughput(v: Mapping[str, Any], interval: bool = True) -> str:
    """The samples/s cell: median with its 95 % interval when known, ⚠ when the timing was unstable."""
    tp = v.get("throughput_sps")
    t = v.get("timing") or {}
    ci = t.get("throughput_ci95")
    text = fmt_num(tp)
    if interval and tp is not None and ci:
        text += f" ({as_float(ci[0]):,.0f}–{as_float(ci[1]):,.0f})"
    return text + (" ⚠" if t.get("unstable") else "")


def fidelity_failed(v: dict[str, Any]) -> bool:
    """Whether a report row is outside its fidelity tolerance (``fidelity_ok`` false or violations listed)."""
    return v.get("fidelity_ok") is False or bool(v.get("fidelity_violations"))


def _fid_summary(fid: Mapping[str, Any]) -> str:
    # Cosine is meaningful for embeddings and logits alike; argmax agreement (per sample, or per
    # position for sequences) and the worst channel only where they apply, so they come after.
    parts = [f"cos {as_float(fid['cosine']):.4f}"]
    if fid.get("worst_channel_cosine") is not None:
        parts.append(f"worst ch {as_float(fid['worst_channel_cosine']):.4f}")
    agree = fid.get("top1_agreement")
    agree = fid.get("position_agreement") if agree is None else agree
    if agree is not None:
        parts.append(f"agree {as_float(agree):.0f}%")
    return " / ".join(parts)


def _acc(v: dict[str, Any]) -> str:
    a = v.get("accuracy") or {}
    fail = " ✗" if fidelity_failed(v) else ""
    if a.get("value") is None:
        fid = next(iter((v.get("fidelity") or {}).values()), None)
        if not fid or fid.get("cosine") is None:
            return "—"
        return _fid_summary(fid) + fail + ("" if fidelity_judged(v) else " (not judged)")
    ci = a.get("ci95")
    band = f" ({as_float(ci[0]):.1f}–{as_float(ci[1]):.1f})" if ci else ""
    name = a.get("metric", "")
    if a.get("ref"):  # a user's metric, in its own units, then the built-in ones that apply next to it
        others = [f"{as_float(val):.2f}% {k}" for k, val in (a.get("metrics") or {}).items() if k != name]
        arrow = "" if a.get("higher_is_better", True) else " ↓"
        return " / ".join([f"{as_float(a['value']):.4g} {name}{arrow}", *others]) + fail
    return f"{as_float(a['value']):.2f}% {name}".strip() + band + fail


def table_rows(report: Any) -> list[list[str]]:
    """Return the demo table's rows (strings), one per variant and batch size."""
    rows = []
    for v in _data(report)["variants"]:
        lat = v.get("latency_ms") or {}
        vs = v.get("vs_fp32") or {}
        speed = fmt_speedup(vs)
        note = "" if v["status"] == "ok" else f" ({v['status']}: {v['reason']})"
        note += " ✗ fidelity" if v["status"] == "ok" and fidelity_failed(v) else ""
        rows.append([f"{v['name']}{note}", v["backend"], v["precision"], v["sparsity"], str(v["batch_size"]),
                     fmt_throughput(v), fmt_num(lat.get("p50"), 3),
                     fmt_num(lat.get("p99"), 3), _acc(v), fmt_delta(vs.get("accuracy_delta")), speed])
    return rows


COLUMNS = ("variant", "backend", "precision", "sparsity", "batch", "samples/s (95% CI)", "p50 ms", "p99 ms", "accuracy",
           "Δ vs FP32", "speedup vs FP32 (95% CI)")


#: Header of the optional engine column (TensorRT-for-RTX build of each variant, made by `trtopt demo`/`run`).
ENGINE_COLUMN = "RTX engine (AOT, not timed)"


#: Header of the optional INT8-compute column: the share of the ONNX graph's Conv/Gemm/MatMul MACs in INT8 Q/DQ.
MACS_COLUMN = "INT8 MACs"

#: columns a narrow terminal may leave out of :func:`render_table`, first to go first (report.md keeps them all)
OPTIONAL_COLUMNS = ("backend", "sparsity", "p99 ms", "batch", "precision", ENGINE_COLUMN, MACS_COLUMN, "p50 ms",
                    "Δ vs FP32")


def engine_cell(v: Mapping[str, Any]) -> str:
    """The engine column's text for a variant (``"0.9 MB · 5/5 INT8"``), or "" when none was built."""
    e = (v.get("extra") or {}).get("engine")
    return str(e.get("text", "")) if isinstance(e, Mapping) else ""


def macs_cell(v: Mapping[str, Any]) -> str:
    """The INT8 MAC share of a variant's ONNX graph (``"97.1%"``), or "" when the row has none."""
    m = v.get("int8_macs")
    return f"{100 * float(m['share']):.1f}%" if isinstance(m, Mapping) and m.get("share") is not None else ""


def _extra_columns(data: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``[(header, cells)]`` of the optional columns some variant fills (INT8 MACs, engine), in order."""
    out = []
    for header, cell in ((MACS_COLUMN, macs_cell), (ENGINE_COLUMN, engine_cell)):
        cells = [cell(v) for v in data["variants"]]
        if any(cells):
            out.append((header, [c or "—" for c in cells]))
    return out


def _rows_with_extras(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table, optional columns included."""
    extras = _extra_columns(data)
    rows = [[*r, *(cells[i] for _, cells in extras)] for i, r in enumerate(table_rows(data))]
    return [*COLUMNS, *(h for h, _ in extras)], rows


def render_table(report: Any):  # -> rich.table.Table
    """Return a ``rich`` table of a report (a :class:`Report` or its dict).

    Columns: variant, backend, precision, sparsity, batch, samples/s, p50/p99 latency (ms),
    accuracy, Δ vs FP32 (points) and speedup vs FP32; ⚠ marks unstable timings, ✗ a variant
    outside its fidelity tolerance (the failed checks go under the table).
    """
    from rich.markup import escape
    from rich.table import Table

    data = _data(report)
    t = Table(title=f"trtopt benchmark — {data['workload'].get('name', '')}".rstrip(" —"))
    header, rows = _rows_with_extras(data)
    for i, c in enumerate(header):
        t.add_column(c, justify="left" if i < 4 else "right")
    notes = {}
    for v, row in zip(data["variants"], rows):
        if v["status"] != "ok":  # keep cells narrow: the reason goes under the table, once per variant
            row[0] = f"{v['name']} ({v['status']})"
            notes[v["name"]] = f"{v['name']}: {v['status']}: {v['reason']}"
        elif fidelity_failed(v):
            row[0] = f"{v['name']} ✗"
            bad = "; ".join(f"{o}: {', '.join(x)}" for o, x in (v.get("fidelity_violations") or {}).items())
            notes[v["name"]] = f"{v['name']}: FAILS fidelity tolerance: {bad}"
        t.add_row(*(escape(c) for c in row))
    if notes:
        t.caption = escape("\n".join(notes.values()))
        t.caption_justify = "left"
    return t


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def fidelity_judged(v: Mapping[str, Any]) -> bool:
    """Whether a report row's fidelity was checked against a tolerance.

    ``fidelity_judged`` where the report has it; in older reports, whether any threshold was recorded
    (a variant reported but not judged carries only empty thresholds).
    """
    judged = v.get("fidelity_judged")
    if judged is not None:
        return bool(judged)
    return any(x is not None for t in (v.get("fidelity_tolerances") or {}).values() for x in t.values())


#: The verdict of a variant whose fidelity is reported, not checked against any tolerance.
NOT_JUDGED = "— not judged"


def _fidelity_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for v in data["variants"]:
        judged = fidelity_judged(v)
        for out, f in (v.get("fidelity") or {}).items():
            bad = (v.get("fidelity_violations") or {}).get(out, [])
            verdict = (NOT_JUDGED + (f" ({v['extra']['fidelity_note']})" if (v.get("extra") or {}).get("fidelity_note")
                                     else "")) if not judged else ("✗ FAIL: " + "; ".join(bad)) if bad else "ok"
            verdict = _kind_note(f) + verdict
            agree = f.get("top1_agreement")
            agree = f.get("position_agreement") if agree is None else agree
            ch = f.get("worst_channel_cosine")
            worst = "—" if ch is None else f"{as_float(ch):.6f} (ch {f.get('worst_channel')})"
            rows.append([v["name"], str(v["batch_size"]), str(v.get("fidelity_reference") or "—"), out,
                         fmt_num(agree, 2),
                         fmt_num(f.get("sequence_agreement"), 2), fmt_num(f.get("cosine"), 6), worst,
                         fmt_num(f.get("max_abs_err"), 5), fmt_num(f.get("mean_abs_err"), 5),
                         fmt_num(f.get("sqnr_db"), 1), verdict])
    return rows


def _generic_notes(data: dict[str, Any]) -> list[str]:
    """One line per output judged generically, with why (the notice is per output, not per row)."""
    seen: dict[str, str] = {}
    for v in data["variants"]:
        for out, f in (v.get("fidelity") or {}).items():
            if f.get("kind") == "generic":
                seen.setdefault(out, f.get("kind_reason", "generic"))
    return [f"Output `{out}`: {why}." for out, why in seen.items()]


def _kind_note(f: Mapping[str, Any]) -> str:
    """``[kind: task metrics] `` of an output judged by its task, else ``""`` (see :func:`_generic_notes`)."""
    if not f.get("kind") or f.get("kind") == "generic":
        return ""
    task = ", ".join(f"{k} {fmt_num(v, 2)}" for k, v in (f.get("task") or {}).items() if v is not None)
    return f"[{f['kind']}: {task}] "


_TOL_TEXT = {"min_task_agreement": "task agreement ≥ {:g} %",
             "min_cosine": "cosine ≥ {:g}", "min_channel_cosine": "worst channel cosine ≥ {:g}",
             "min_top1_agreement": "top-1 agreement ≥ {:g} %", "min_sqnr_db": "SQNR ≥ {:g} dB",
             "max_abs_err": "max abs err ≤ {:g}"}


def _fmt_tol(tol: Mapping[str, Any]) -> str:
    return ", ".join(_TOL_TEXT[k].format(as_float(v)) for k, v in tol.items() if v is not None and k in _TOL_TEXT) \
        or "none"


def _env_lines(env: Mapping[str, Any]) -> list[str]:
    cpu = env.get("cpu") or {}
    pk = env.get("packages") or {}
    lines = [f"- CPU: {cpu.get('model')} ({cpu.get('available_cores')} cores available; "
             f"flags: {' '.join(cpu.get('flags') or []) or 'n/a'})",
             f"- OS: {env.get('os')}, Python {env.get('python')}",
             "- Packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v)]
    for g in env.get("gpus") or []:
        lines.append(f"- GPU: {g.get('name')} (driver {g.get('driver')}, CUDA {g.get('cuda_driver_version')}, "
                     f"sm_{str(g.get('compute_capability')).replace('.', '')}, clocks {g.get('clocks_mhz')})")
    if not env.get("gpus"):
        lines.append("- GPU: none detected")
    if env.get("jetson"):
        lines.append(f"- Jetson: {env['jetson']}")
    gc = env.get("gpu_conditions")
    if gc and env.get("gpus"):
        lines.append(f"- GPU conditions at start (NVML): {gc}")
    return lines


def render_markdown(report: Any, plots: Mapping[str, Path] | None = None, plot_note: str | None = None) -> str:
    """Return ``report.md``: results table, fidelity table, timing notes, environment, plots.

    ``plot_note`` (e.g. ``plots skipped: ...``, or the plots that failed) goes under the Plots heading.
    """
    data = _data(report)
    wl = data.get("workload") or {}
    lines = [f"# trtopt benchmark: {wl.get('name', 'model')}", "",
             f"Schema `{data['schema']}`, created {data['created']}.", ""]
    if wl.get("description"):
        lines += [str(wl["description"]), ""]
    header, rows = _rows_with_extras(data)
    lines += ["## Results", "", *_md_table(header, rows), ""]
    modes = sorted({(v.get("timing") or {}).get("mode") for v in data["variants"] if v.get("timing")})
    lines.append(f"Timing mode(s): {', '.join(m for m in modes if m) or 'n/a'}. Δ vs FP32 is in metric points "
                 "against the dense FP32 variant at the same batch size; speedup is a throughput ratio.")
    rounds = sorted({(v.get("timing") or {}).get("rounds") or 0 for v in data["variants"] if v.get("timing")})
    if any(rounds):
        lines.append(f"Variants of a batch size were timed in interleaved rounds ({'/'.join(map(str, rounds))} "
                     "rounds, random start): samples/s is the median of the per-round throughputs, speedup the "
                     "median of the paired per-round ratios; (low–high) are 95 % bootstrap intervals, ≈ marks a "
                     "speedup whose interval contains 1.0 (not significant). Accuracy intervals: Wilson 95 %.")
    elif data["variants"]:
        lines.append("Point estimates (no intervals: timed sequentially or an older report).")
    unstable = [v["name"] for v in data["variants"] if (v.get("timing") or {}).get("unstable")]
    if unstable:
        lines.append(f"⚠ Unstable timings (latency CV above threshold): {', '.join(unstable)}.")
    gpu_warn = dict.fromkeys(w for v in data["variants"]
                             for w in ((v.get("timing") or {}).get("gpu_conditions") or {}).get("warnings", []))
    lines += [f"⚠ GPU conditions: {w}." for w in gpu_warn]
    lines.append("")
    trt = [(v, (v.get("timing") or {}).get("trtexec")) for v in data["variants"]]
    trt = [(v, t) for v, t in trt if t and "throughput_qps" in t]
    if trt:
        lines += ["## TensorRT in trtexec's terms", "",
                  *_md_table(["variant", "batch", "Throughput (qps)", "Latency median ms", "Enqueue Time median ms",
                              "H2D Latency median ms", "GPU Compute Time median ms", "D2H Latency median ms"],
                             [[v["name"], str(v["batch_size"]), fmt_num(t["throughput_qps"]),
                               *(fmt_num(t[k]["median"], 4) for k in ("latency", "enqueue_time", "h2d_latency",
                                                                      "gpu_compute_time", "d2h_latency"))]
                              for v, t in trt]),
                  "", "Same names and definitions as trtexec (with H2D/D2H, one stream): Latency = H2D + GPU Compute "
                  "+ D2H per query; Throughput = queries / Total Host Walltime. See bench/README.md.", ""]
    fid = _fidelity_rows(data)
    if fid:
        lines += ["## Fidelity against FP32", ""]
        header = ["variant", "batch", "compared with", "output", "top-1 agree %", "sequence agree %", "cosine",
                  "worst channel cos", "max abs err", "mean abs err", "SQNR dB", "tolerance"]
        lines += [*_md_table(header, fid), ""]
        tols = sorted({_fmt_tol(t) for v in data["variants"] if fidelity_judged(v)
                       for t in (v.get("fidelity_tolerances") or {}).values()})
        lines += [f"Tolerance(s) applied: {'; '.join(tols) or 'n/a'}. Top-1 agreement is per sample for "
                  "(N, C) outputs and per position (argmax over the last axis) for (N, T, C) outputs; ✗ marks a "
                  f"variant outside its tolerance; {NOT_JUDGED} a variant whose fidelity to the model it is compared "
                  "with is reported, not checked (a pruned FP32 model is a different model than the dense one: its "
                  "accuracy says whether pruning worked; `--reference VARIANT=none`).", ""]
        notes = _generic_notes(data)
        lines += [*notes, ""] if notes else []
    lines += ["## Environment", "", *_env_lines(data.get("environment") or {}), ""]
    pngs = {k: p for k, p in (plots or {}).items() if str(p).endswith(".png")}
    if pngs or plot_note:
        lines += ["## Plots", ""] + [f"![{k}]({Path(p).name})" for k, p in pngs.items()]
        lines += ([""] if pngs else []) + ([plot_note, ""] if plot_note else [])
    return "\n".join(lines)


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[list[str]]:
    """Side-by-side rows for two reports, matched on (variant, backend, batch).

    Throughput cells keep their 95 % intervals and ⚠ marks; the change B vs A carries the
    two-sample bootstrap interval of the ratio of medians when both have per-round throughputs
    (≈ when it contains 0), and each run's speedup vs FP32 with its interval is shown.
    """
    va = {variant_key(v): v for v in a["variants"]}
    vb = {variant_key(v): v for v in b["variants"]}
    rows = []
    for key in list(va) + [k for k in vb if k not in va]:
        x, y = va.get(key), vb.get(key)
        tx, ty = (as_float(x.get("throughput_sps")) if x else None), (as_float(y.get("throughput_sps")) if y else None)
        ax = as_float((x.get("accuracy") or {}).get("value")) if x else None
        ay = as_float((y.get("accuracy") or {}).get("value")) if y else None
        change = _change(x, y) if tx and ty else "—"
        dacc = fmt_delta(ay - ax) if ax is not None and ay is not None else "—"
        rows.append([key[0], key[1], str(key[2]), fmt_throughput(x) if x else "—", fmt_throughput(y) if y else "—",
                     change, fmt_speedup((x or {}).get("vs_fp32") or {}), fmt_speedup((y or {}).get("vs_fp32") or {}),
                     _acc(x) if x else "—", _acc(y) if y else "—", dacc])
    return rows


def _change(x: Mapping[str, Any], y: Mapping[str, Any]) -> str:
    from trtopt.benchmark.stats import ratio_of_medians_ci

    tx, ty = as_float(x["throughput_sps"]), as_float(y["throughput_sps"])
    rx, ry = ((v.get("timing") or {}).get("round_throughputs_sps") for v in (x, y))
    if not (rx and ry):
        return f"{100 * (ty / tx - 1):+.1f}%"
    _, lo, hi = ratio_of_medians_ci([as_float(v) for v in ry], [as_float(v) for v in rx])
    head = "≈" if lo <= 1 <= hi else ""
    return f"{head}{100 * (ty / tx - 1):+.1f}% ({100 * (lo - 1):+.1f}…{100 * (hi - 1):+.1f})"


COMPARE_COLUMNS = ("variant", "backend", "batch", "A samples/s", "B samples/s", "Δ throughput (95% CI)",
                   "A speedup vs FP32", "B speedup vs FP32", "A accuracy", "B accuracy", "Δ accuracy")
