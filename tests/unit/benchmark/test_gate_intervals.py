"""Gate with intervals: regression / pass / inconclusive (exit 3), older baselines, and the
interval-carrying tables of ``report`` (one report and A vs B)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from trtopt.benchmark.gate import Budget, gate
from trtopt.benchmark.render import compare_rows, fmt_speedup, table_rows
from trtopt.benchmark.stats import pack_bits, ratio_of_medians_ci
from trtopt.cli.main import main
from trtopt.errors import GateInconclusive

N = 540


def _rounds(median: float, spread: float, seed: int) -> list[float]:
    return list(median * np.exp(np.random.default_rng(seed).normal(0, spread, 20)))


def _v(name: str, rounds: list[float], correct: np.ndarray | None = None, unstable: bool = False) -> dict:
    acc = None if correct is None else {"metric": "top1", "value": 100 * correct.mean(), "samples": int(correct.size),
                                        "correct_bits": pack_bits(correct)}
    return {"name": name, "backend": "onnxruntime", "precision": "fp32", "sparsity": "dense", "batch_size": 8,
            "throughput_sps": float(np.median(rounds)), "latency_ms": {"p50": 1.0},
            "timing": {"mode": "cpu", "unstable": unstable, "round_throughputs_sps": rounds, "rounds": len(rounds),
                       "throughput_ci95": [0.95 * np.median(rounds), 1.05 * np.median(rounds)]},
            "accuracy": acc, "fidelity": {}, "vs_fp32": {"speedup": 1.0, "speedup_ci95": [0.93, 1.07],
                                                         "speedup_significant": False, "baseline": name},
            "artifact": None, "status": "ok", "reason": ""}


def _report(*variants) -> dict:
    return {"schema": "trtopt.report/2", "created": "x", "environment": {"cpu": {"model": "c"}, "gpus": []},
            "workload": {}, "variants": list(variants)}


def _correct(lost: int = 0) -> np.ndarray:
    c = np.ones(N, bool)
    c[:20] = False  # 96.3 %
    c[20:20 + lost] = False
    return c


def test_throughput_regression_pass_and_inconclusive_follow_the_interval():
    base = _report(_v("fp32", _rounds(1000, 0.02, 0)))
    far = gate(_report(_v("fp32", _rounds(800, 0.02, 1))), base, Budget(max_throughput_drop=5))
    assert far.exit_code == 1 and "beyond the 5% budget" in far.rows[0].problems[0]
    near = gate(_report(_v("fp32", _rounds(1000, 0.02, 2))), base, Budget(max_throughput_drop=5))
    assert near.exit_code == 0 and near.rows[0].throughput_change_ci[0] > -5
    # -4 % with 30 % round-to-round noise: the interval straddles the 5 % budget -> neither pass nor fail
    noisy = gate(_report(_v("fp32", _rounds(960, 0.3, 3))), _report(_v("fp32", _rounds(1000, 0.3, 4))),
                 Budget(max_throughput_drop=5))
    row = noisy.rows[0]
    assert noisy.exit_code == 3 and row.inconclusive and not row.regressed
    lo, hi = row.throughput_change_ci
    assert lo < -5 < hi and "straddles the 5% budget" in row.unsure[0]
    expected = ratio_of_medians_ci(_rounds(960, 0.3, 3), _rounds(1000, 0.3, 4))
    assert (lo, hi) == pytest.approx((100 * (expected[1] - 1), 100 * (expected[2] - 1)))
    with pytest.raises(GateInconclusive, match="inconclusive: re-run on a quieter machine") as e:
        noisy.raise_for_regressions()
    assert e.value.exit_code == 3


def test_accuracy_gate_knows_one_image_from_a_regression():
    r = _rounds(1000, 0.01, 0)
    base = _report(_v("fp32", r, _correct()))
    one = gate(_report(_v("fp32", r, _correct(lost=1))), base, Budget(max_accuracy_drop=0.1))
    assert one.exit_code == 3 and "1 lost, 0 gained of 540" in one.rows[0].unsure[0]  # 0.19 pts: noise or drop?
    assert gate(_report(_v("fp32", r, _correct(lost=1))), base, Budget(max_accuracy_drop=0.5)).exit_code == 0
    ten = gate(_report(_v("fp32", r, _correct(lost=10))), base, Budget(max_accuracy_drop=0.5))
    assert ten.exit_code == 1 and ten.rows[0].accuracy_change == pytest.approx(-1000 / 540)


def test_older_baseline_falls_back_to_point_estimates_with_a_note():
    base = _report(_v("fp32", [1000.0] * 5, _correct()))
    base["schema"] = "trtopt.report/1"
    for v in base["variants"]:
        v["timing"] = {"mode": "cpu"}
        v["accuracy"] = {"metric": "top1", "value": v["accuracy"]["value"]}
    cur = _report(_v("fp32", [900.0, 930.0, 940.0, 950.0, 990.0], _correct()))
    res = gate(cur, base, Budget(max_throughput_drop=5))
    assert res.exit_code == 1 and res.rows[0].throughput_change_ci is None  # point estimate: -6 % > 5 %
    assert any("compared as point estimates" in n and "throughput" in n for n in res.notes)
    assert any("accuracy of fp32/onnxruntime@8 compared as point estimates" in n for n in res.notes)


def test_cli_gate_exit_3_and_notes(tmp_path, capsys):
    base, cur = tmp_path / "b.json", tmp_path / "c.json"
    base.write_text(json.dumps(_report(_v("fp32", _rounds(1000, 0.3, 4)))))
    cur.write_text(json.dumps(_report(_v("fp32", _rounds(960, 0.3, 3)))))
    assert main(["gate", str(cur), "--baseline", str(base), "--max-throughput-drop", "5%"]) == 3
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "re-run on a quieter machine or time longer" in out


def test_speedup_cell_marks_an_interval_containing_one():
    assert fmt_speedup({"speedup": 1.004, "speedup_ci95": [0.93, 1.07], "speedup_significant": False}) \
        == "≈1.0× (0.93–1.07)"
    assert fmt_speedup({"speedup": 1.5, "speedup_ci95": [1.41, 1.62], "speedup_significant": True}) \
        == "1.50× (1.41–1.62)"
    assert fmt_speedup({"speedup": 1.03, "speedup_ci95": [1.0004, 1.38], "speedup_significant": True}) \
        == "1.0300× (1.0004–1.3800)"
    assert fmt_speedup({"speedup": 2.0}) == "2.00×"  # an older report: point estimate only
    assert fmt_speedup({"speedup": None}) == "—"


def test_report_tables_keep_instability_marks_and_intervals():
    a = _report(_v("fp32", _rounds(1000, 0.3, 1), unstable=True))
    b = copy.deepcopy(a)
    b["variants"][0]["timing"]["unstable"] = False
    row = table_rows(a)[0]
    assert "⚠" in row[5] and "(" in row[5] and "≈1.0× (0.93–1.07)" in row[-1]
    cmp = compare_rows(a, b)[0]
    assert "⚠" in cmp[3] and "⚠" not in cmp[4]
    assert cmp[5].startswith("≈+0.0%")  # identical rounds: the change's interval contains 0
    assert cmp[6] == "≈1.0× (0.93–1.07)"
