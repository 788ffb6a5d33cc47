"""Bring your own model, end to end: run every stage of examples/byom/run_all.sh and time it.

The stages are read from ``run_all.sh`` itself (its ``# N. title`` comment blocks), so this script
runs exactly the documented commands: each block runs in its own ``bash`` process after the
script's preamble (interpreter, ``PYTHONPATH``, the ``trtopt`` shim), and its wall time is measured
around the process. A failing stage is recorded (exit code, last lines of its output) and, with
``--keep-going`` (default), the later stages still run; a stage that needs a failed one fails too.

Run:  python bench/byom_e2e.py [--out bench/results/byom] [--stop-on-error]
Writes OUT/stages.json (the stage table), OUT/report.json (stages, environment, the metric and
throughput of every variant from the bench and recipe reports) and OUT/report.md.
Exit 0 when every stage passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trtopt.fileio import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "byom"
SCRIPT = EXAMPLE / "run_all.sh"
OUT = ROOT / "bench" / "results" / "byom"
_STAGE = re.compile(r"^# (\d+[a-z]?)\. (.+)$")
#: reports written by the stages (relative to the example): label -> report.json
REPORTS = {"step by step (detector)": "runs/detector/bench/report.json",
           "recipe (detector)": "runs/detector-recipe/report.json",
           "recipe (encoder)": "runs/encoder-recipe/report.json",
           "step by step (encoder)": "runs/encoder/bench/report.json"}


@dataclass
class Stage:
    """One ``# N. title`` block of run_all.sh and its outcome (``seconds``: wall time)."""

    key: str
    title: str
    commands: str
    rc: int | None = None
    seconds: float | None = None
    tail: str = ""

    @property
    def status(self) -> str:
        """``ok``, ``failed`` or ``not run``."""
        return "not run" if self.rc is None else ("ok" if self.rc == 0 else "failed")


def split_script(text: str) -> tuple[str, list[Stage]]:
    """Split run_all.sh into its preamble and its ``# N. title`` stages (in order).

    Raises:
        ValueError: The script has no stage comments.
    """
    preamble: list[str] = []
    stages: list[Stage] = []
    for line in text.splitlines():
        m = _STAGE.match(line)
        if m:
            stages.append(Stage(m.group(1), m.group(2), ""))
        elif stages:
            stages[-1].commands += line + "\n"
        else:
            preamble.append(line)
    if not stages:
        raise ValueError(f"{SCRIPT}: no '# N. title' stage comments found")
    return "\n".join(preamble) + "\n", stages


def run_stage(preamble: str, stage: Stage, env: dict[str, str], log) -> None:
    """Run one stage in a fresh bash after the preamble; fill in rc, seconds and the output tail."""
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", preamble + stage.commands, str(SCRIPT)], env=env, cwd=EXAMPLE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    stage.seconds = time.perf_counter() - t0
    stage.rc = proc.returncode
    log.write(f"\n===== {stage.key}. {stage.title} (rc {stage.rc}, {stage.seconds:.1f} s)\n{proc.stdout}")
    stage.tail = "\n".join(proc.stdout.strip().splitlines()[-3:])


def summarise_report(path: Path) -> list[dict]:
    """Metric and throughput of every variant of a trtopt report (empty when the file is absent)."""
    if not path.is_file():
        return []
    rows = []
    for v in json.loads(path.read_text(encoding="utf-8")).get("variants", []):
        acc = v.get("accuracy") or {}
        rows.append({"variant": v.get("name"), "backend": v.get("backend"), "batch": v.get("batch_size"),
                     "status": v.get("status"), "metric": acc.get("metric"), "value": acc.get("value"),
                     "throughput_sps": v.get("throughput_sps"), "fidelity_ok": v.get("fidelity_ok")})
    return rows


def _fmt(x, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def render_md(stages: list[Stage], reports: dict[str, list[dict]], env: dict, command: str) -> str:
    """The report as Markdown: the stage table, then one table per report found."""
    total = sum(s.seconds or 0.0 for s in stages)
    lines = ["# Bring your own model: end to end", "",
             f"`{command}` on {env['machine']} ({env['cpus']} CPUs), Python {env['python']}.", "",
             "Every stage is a block of `examples/byom/run_all.sh`, run as its own process; wall time in seconds.",
             "", "| stage | commands | status | wall s |", "|---|---|---|---:|"]
    for s in stages:
        lines.append(f"| {s.key} | {s.title} | {s.status}{f' (rc {s.rc})' if s.rc else ''} | {_fmt(s.seconds)} |")
    lines += [f"| | **total** | | **{total:.1f}** |", ""]
    failed = [s for s in stages if s.status == "failed"]
    if failed:
        lines += ["Failed stages (last lines of output):", ""]
        for s in failed:
            lines += [f"- {s.key}. {s.title}:", "", "  ```", *("  " + t for t in s.tail.splitlines()), "  ```"]
        lines.append("")
    for label, rows in reports.items():
        if not rows:
            continue
        lines += [f"## {label}", "", "| variant | backend | batch | metric | value | samples/s | fidelity ok |",
                  "|---|---|---:|---|---:|---:|---|"]
        for r in rows:
            lines.append(f"| {r['variant']} | {r['backend']} | {r['batch']} | {r['metric'] or '—'} | "
                         f"{_fmt(r['value'], 2)} | {_fmt(r['throughput_sps'], 0)} | {r['fidelity_ok']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT.relative_to(ROOT)})")
    ap.add_argument("--stop-on-error", action="store_true", help="stop at the first failed stage")
    ap.add_argument("--only", default=None, help="comma list of stage keys to run (e.g. 1,2,4,5)")
    args = ap.parse_args(argv)
    preamble, stages = split_script(SCRIPT.read_text(encoding="utf-8"))
    only = set(args.only.split(",")) if args.only else None
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", sys.executable))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with open(args.out / "stages.log", "w", encoding="utf-8") as log:
        for s in stages:
            if only is not None and s.key not in only:
                continue
            print(f"[{s.key}] {s.title} ...", end=" ", flush=True)
            run_stage(preamble, s, env, log)
            print(f"{s.status} ({s.seconds:.1f} s)", flush=True)
            if s.rc and args.stop_on_error:
                break
    machine = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    command = "python bench/byom_e2e.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    table = [{**asdict(s), "status": s.status} for s in stages]
    for row in table:
        row.pop("commands")
    reports = {label: summarise_report(EXAMPLE / rel) for label, rel in REPORTS.items()}
    atomic_write_json(args.out / "stages.json", table)
    atomic_write_json(args.out / "report.json", {"schema": "trtopt.byom-e2e/1", "command": command,
                                                 "environment": machine, "stages": table, "reports": reports,
                                                 "total_s": sum(s.seconds or 0.0 for s in stages)})
    atomic_write_text(args.out / "report.md", render_md(stages, reports, machine, command))
    print(f"report: {args.out / 'report.md'}")
    return 0 if all(s.status != "failed" for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
