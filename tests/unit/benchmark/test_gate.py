"""Regression gate: pass/fail, budgets, overrides, bad input and CLI exit codes."""

from __future__ import annotations

import copy
import json

import pytest

from trtopt.benchmark.gate import Budget, gate, load_overrides
from trtopt.cli.main import main
from trtopt.errors import ConfigError, GateFailure, InputError


def _v(name, tput, acc, batch=8, status="ok", reason=""):
    ok = status == "ok"
    return {"name": name, "backend": "onnxruntime", "precision": "int8" if "int8" in name else "fp32",
            "sparsity": "dense", "batch_size": batch, "throughput_sps": tput if ok else None,
            "latency_ms": {"p50": 1, "p90": 1, "p99": 1, "mean": 1, "std": 0} if ok else None,
            "timing": {"mode": "cpu"} if ok else None, "accuracy": {"metric": "top1", "value": acc} if ok else None,
            "fidelity": {}, "vs_fp32": {"accuracy_delta": None, "speedup": None}, "artifact": None,
            "status": status, "reason": reason}


def _report(*variants):
    return {"schema": "trtopt.report/1", "created": "x", "environment": {"cpu": {"model": "c"}, "gpus": []},
            "workload": {}, "variants": list(variants)}


BASE = _report(_v("fp32", 1000.0, 97.0), _v("int8", 2000.0, 96.8))


def test_within_budget_passes():
    cur = _report(_v("fp32", 960.0, 97.0), _v("int8", 1990.0, 96.4))  # -4% and -0.4 pts
    res = gate(cur, BASE, Budget(max_accuracy_drop=0.5, max_throughput_drop=5))
    assert res.passed and len(res.rows) == 2
    assert res.rows[0].throughput_change_pct == pytest.approx(-4.0)


def test_throughput_and_accuracy_regressions_are_named():
    cur = _report(_v("fp32", 900.0, 97.0), _v("int8", 2000.0, 95.0))
    res = gate(cur, BASE, Budget(0.5, 5))
    assert not res.passed
    probs = {r.name: r.problems for r in res.regressions}
    assert probs["fp32"] == ("throughput -10.0% > 5% budget",)
    assert probs["int8"] == ("accuracy -1.80 points > 0.5 budget",)
    with pytest.raises(GateFailure, match="2 variant") as e:
        res.raise_for_regressions()
    assert e.value.exit_code == 1


def test_variant_that_stopped_running_regresses():
    cur = _report(_v("fp32", 1000.0, 97.0), _v("int8", 0, 0, status="failed", reason="build failed"))
    res = gate(cur, BASE)
    assert [r.problems for r in res.regressions] == [("failed: build failed",)]


def test_overrides_per_variant_and_batch(tmp_path):
    f = tmp_path / "o.toml"
    f.write_text('[defaults]\nmax_throughput_drop = 20\n[variants.int8]\nmax_accuracy_drop = 2.0\n')
    ov = load_overrides(f)
    cur = _report(_v("fp32", 900.0, 97.0), _v("int8", 2000.0, 95.0))
    assert gate(cur, BASE, Budget(0.5, 5), ov).passed
    f.write_text('[variants."int8@8"]\nmax_accuracy_drop = 1.0\n')
    assert [r.name for r in gate(cur, BASE, Budget(0.5, 50), load_overrides(f)).regressions] == ["int8"]


def test_skip_lets_a_variant_be_absent(tmp_path):
    cur = _report(_v("fp32", 1000.0, 97.0))
    with pytest.raises(InputError, match="missing from the report: int8/onnxruntime@8"):
        gate(cur, BASE)
    f = tmp_path / "o.toml"
    f.write_text("[variants.int8]\nskip = true\n")
    assert gate(cur, BASE, overrides=load_overrides(f)).passed


def test_bad_overrides_and_budgets(tmp_path):
    f = tmp_path / "o.toml"
    f.write_text("[variants.int8]\nmax_acc = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_overrides(f)
    f.write_text("[defaults]\nmax_throughput_drop = -1\n")
    with pytest.raises(ConfigError, match="non-negative"):
        load_overrides(f)
    f.write_text("not toml [")
    with pytest.raises(InputError, match="cannot parse"):
        load_overrides(f)


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def test_cli_exit_codes(tmp_path, capsys):
    base = _write(tmp_path, "base.json", BASE)
    good = _write(tmp_path, "good.json", _report(_v("fp32", 990.0, 97.0), _v("int8", 2000.0, 96.8)))
    bad = _write(tmp_path, "bad.json", _report(_v("fp32", 500.0, 97.0), _v("int8", 2000.0, 96.8)))
    assert main(["gate", good, "--baseline", base]) == 0
    assert "within budget" in capsys.readouterr().out
    assert main(["gate", bad, "--baseline", base, "--max-throughput-drop", "10%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSIONS" in out and "fp32" in out and "-50.0%" in out
    assert main(["gate", bad, "--baseline", base, "--max-throughput-drop", "60%"]) == 0
    v2 = copy.deepcopy(BASE)
    v2["schema"] = "trtopt.report/3"
    assert main(["gate", good, "--baseline", _write(tmp_path, "v3.json", v2)]) == 2
    assert "trtopt.report/3" in capsys.readouterr().err
    other = _write(tmp_path, "other.json", _report(_v("fp32", 990.0, 97.0), _v("fp16", 1.0, 1.0)))
    assert main(["gate", other, "--baseline", base]) == 2
    assert main(["gate", good, "--baseline", base, "--max-accuracy-drop", "lots"]) == 2
    assert main(["gate", str(tmp_path / "missing.json"), "--baseline", base]) == 2


def test_notes_for_other_machine_and_timing_mode():
    cur = copy.deepcopy(BASE)
    cur["environment"]["gpus"] = [{"name": "NVIDIA H100"}]
    cur["variants"][0]["timing"]["mode"] = "gpu-e2e"
    notes = gate(cur, BASE).notes
    assert any("different GPU" in n for n in notes)
    assert any("timing mode gpu-e2e vs baseline cpu" in n for n in notes)


def test_gate_refuses_to_compare_different_precision_or_metric():
    base = {"schema": "trtopt.report/1", "environment": {}, "workload": {}, "variants": [{
        "name": "int8", "backend": "onnxruntime", "precision": "int8", "sparsity": "dense", "batch_size": 8,
        "throughput_sps": 100.0, "latency_ms": {"p50": 1.0}, "accuracy": {"metric": "top1", "value": 99.0},
        "status": "ok", "reason": ""}]}
    for field, value in (("precision", "fp16"), ("accuracy", {"metric": "top5", "value": 99.0})):
        cur = copy.deepcopy(base)
        cur["variants"][0][field] = value
        with pytest.raises(InputError, match="in the baseline"):
            gate(cur, base)
    assert gate(copy.deepcopy(base), base).rows  # identical reports compare fine
