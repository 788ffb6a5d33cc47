"""Interleaved rounds: a synthetic clock with known drift, round order, budgets, and paired speedups."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers.fake_runners import FEEDS, Clock, DriftRunner
from trtopt.benchmark import BenchConfig, measure
from trtopt.benchmark.interleave import TimedVariant, measure_interleaved, plan_rounds
from trtopt.benchmark.report import speedup_of
from trtopt.benchmark.stats import paired_ratio_ci
from trtopt.errors import ConfigError


def test_interleaving_cancels_drift_that_sequential_timing_reports_as_a_speedup():
    # Two identical models on a machine that gets 3x slower over the run.
    cfg = BenchConfig(warmup=2, min_duration_s=1.0, rounds=20, seed=0)
    clock = Clock()
    with DriftRunner(clock, 1.0, drift_per_s=1.0) as a, DriftRunner(clock, 1.0, drift_per_s=1.0) as b:
        ta, tb = measure(a, FEEDS, cfg, clock=clock), measure(b, FEEDS, cfg, clock=clock)
    sequential = tb.throughput_sps / ta.throughput_sps
    assert sequential < 0.75  # B ran later, on the slower machine: a "regression" that does not exist

    clock = Clock()
    with DriftRunner(clock, 1.0, drift_per_s=1.0) as a, DriftRunner(clock, 1.0, drift_per_s=1.0) as b:
        res = measure_interleaved([TimedVariant("a", a, FEEDS, 4), TimedVariant("b", b, FEEDS, 4)], cfg,
                                  group="b4", clock=clock)
    sp = speedup_of(res["b"], res["a"])
    assert sp["speedup_method"] == "paired-rounds"
    assert sp["speedup"] == pytest.approx(1.0, abs=0.03)
    lo, hi = sp["speedup_ci95"]
    assert lo <= 1.0 <= hi and sp["speedup_significant"] is False
    assert len(res["a"].round_sps) == 20 and res["a"].method == "interleaved"
    # throughput is the median of the per-round throughputs, inside its own interval
    assert res["a"].throughput_sps == pytest.approx(float(np.median(res["a"].round_sps)))
    assert res["a"].throughput_ci95[0] <= res["a"].throughput_sps <= res["a"].throughput_ci95[1]


def test_a_real_speedup_is_significant_and_its_interval_holds_the_true_ratio():
    cfg = BenchConfig(warmup=1, min_duration_s=0.5, rounds=20, seed=1)
    clock = Clock()
    with DriftRunner(clock, 2.0, 0.5, noise=0.05, seed=1) as slow, \
            DriftRunner(clock, 1.0, 0.5, noise=0.05, seed=2) as fast:
        res = measure_interleaved([TimedVariant("fp32", slow, FEEDS, 4), TimedVariant("int8", fast, FEEDS, 4)],
                                  cfg, group="b4", clock=clock)
    sp = speedup_of(res["int8"], res["fp32"])
    assert sp["speedup_significant"] is True
    assert sp["speedup_ci95"][0] <= 2.0 <= sp["speedup_ci95"][1]
    assert sp["speedup"] == pytest.approx(paired_ratio_ci(res["int8"].round_sps, res["fp32"].round_sps)[0])


def test_rounds_are_round_robin_blocks_with_a_random_start_and_exact_counts():
    log: list[str] = []
    clock = Clock()
    cfg = BenchConfig(warmup=0, iterations=12, rounds=6, seed=3)
    runners = [DriftRunner(clock, 1.0, log=log, name=n) for n in "ABC"]
    for r in runners:
        r.__enter__()
    res = measure_interleaved([TimedVariant(n, r, FEEDS, 4) for n, r in zip("ABC", runners)], cfg, clock=clock)
    timed = log  # warm-up 0; count mode runs no probe calls
    blocks = [timed[i:i + 2] for i in range(0, len(timed), 2)]
    assert all(len(set(b)) == 1 for b in blocks) and len(blocks) == 18  # 6 rounds x 3 variants, 2 iterations each
    rounds = [[b[0] for b in blocks[i:i + 3]] for i in range(0, 18, 3)]
    assert all(sorted(r) == ["A", "B", "C"] for r in rounds)
    assert all("".join(r) in "ABCAB" + "CA" for r in rounds)  # cyclic order...
    assert len({r[0] for r in rounds}) > 1  # ...from a random start
    assert all(t.iterations == 12 and len(t.round_sps) == 6 for t in res.values())


def test_budget_too_short_for_five_rounds_is_extended_with_a_warning(caplog):
    # a positive budget is a minimum (trtexec's --duration): 5 rounds of the slowest variant, +20 %
    with caplog.at_level("WARNING", logger="trtopt"):
        plan = plan_rounds(BenchConfig(min_duration_s=0.3), {"fast": 0.001, "slow": 0.1})
    assert plan.rounds == 5 and plan.block_s == pytest.approx(0.12)
    assert any("too short for 5 interleaved rounds" in r.message and "'slow'" in r.message for r in caplog.records)
    with pytest.raises(ConfigError, match=r"too short for 5 interleaved rounds .*--min-duration 0\.6"):
        plan_rounds(BenchConfig(min_duration_s=0.0), {"fast": 0.001, "slow": 0.1})
    with pytest.raises(ConfigError, match="too few for 5 interleaved rounds"):
        plan_rounds(BenchConfig(iterations=3), {"a": 0.001})
    plan = plan_rounds(BenchConfig(min_duration_s=1.0, rounds=20), {"a": 0.001, "b": 0.1})
    assert plan.rounds == 10 and plan.block_s == pytest.approx(0.1)  # as many rounds as fit the slowest
    with pytest.raises(ConfigError, match="rounds"):
        BenchConfig(rounds=3)


def test_cli_budget_too_short_exits_2_with_one_line(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from trtopt.cli.main import main

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    rc = main(["bench", str(tmp_path / "m.onnx"), "--min-duration", "0", "--warmup", "1", "--no-plots",
               "--out", str(tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2 and len(err) == 1 and "too short for 5 interleaved rounds" in err[0]
    assert not (tmp_path / "o").exists()


def test_unstable_variants_get_one_warning_for_the_whole_comparison(caplog):
    cfg = BenchConfig(warmup=0, iterations=40, rounds=5, seed=0, cv_threshold=0.05)
    clock = Clock()
    runners = [DriftRunner(clock, 1.0, noise=0.5, seed=s, name=n) for s, n in enumerate("ABC")]
    for r in runners:
        r.__enter__()
    with caplog.at_level("WARNING", logger="trtopt"):
        res = measure_interleaved([TimedVariant(n, r, FEEDS, 4) for n, r in zip("ABC", runners)], cfg, clock=clock)
    assert all(t.unstable for t in res.values())
    lines = [r.message for r in caplog.records if "unstable timing" in r.message]
    assert len(lines) == 1 and all(f"{n} " in lines[0] for n in "ABC"), lines
