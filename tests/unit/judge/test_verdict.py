"""The verdict: task floors (halved loss in sample), outlier samples judged apart, the case named."""

from __future__ import annotations

import numpy as np

from trtopt.judge.kinds import OutputKind
from trtopt.judge.verdict import Judge, judge_output


def _ctc(paths):
    return np.eye(5)[np.asarray(paths)]


def test_a_task_floor_is_halved_in_sample_and_applied_whole_held_out():
    ref = _ctc([[0, 1, 0, 2]] * 20)
    out = ref.copy()
    out[0] = _ctc([0, 3, 0, 2])  # one of 20 lines read differently: 95 % identical
    kind = OutputKind("ctc")
    held = judge_output("y", kind, ref, out, None, in_sample=False)
    assert held.violations == [] and held.margin == 0.0  # 95 % against the floor of 95 %
    assert judge_output("y", kind, ref, out, None, in_sample=True).violations == [
        "sequences_identical 95 < 97.5 (ctc)"]


def test_outlier_samples_are_judged_apart_and_the_case_says_so():
    ref = _ctc([[0, 1, 0, 2]] * 20)
    out = ref.copy()
    out[3] = _ctc([0, 3, 0, 2])  # only the outlier sample reads differently
    judge = Judge({"y": OutputKind("ctc")}, outliers=(3,))
    verdict = judge(["y"], [ref], [out])
    assert verdict.ok and verdict.case == "outlier data" and verdict.outlier_samples == [3]
    assert verdict.outlier_outputs[0].violations and "[3] judged apart as outlier data" in verdict.explain()
    unflagged = Judge({"y": OutputKind("ctc")})(["y"], [ref], [out])
    assert not unflagged.ok and unflagged.case == "INT8 loss"


def test_an_undeclared_output_is_generic_and_says_it_was_not_recognized():
    ref = np.random.default_rng(0).normal(size=(8, 3))
    v = Judge({})(["y"], [ref], [ref])
    assert v.ok and v.outputs[0].kind.kind == "generic" and not v.outputs[0].kind.recognized
    assert v.to_dict()["outputs"][0]["kind_reason"].startswith("not recognized, judged generically")


def test_a_probability_map_needs_its_regions_and_its_cosine():
    ref = np.zeros((2, 1, 32, 32))
    ref[:, 0, 4:12, 4:28] = 0.9
    ref[:, 0, 18:26, 4:28] = 0.8
    kind = OutputKind("prob_map")
    same_regions = ref.copy()
    same_regions[:, 0, 4:12, 4:28] = 0.35  # every region still above 0.3, the map itself far off
    v = judge_output("map", kind, ref, same_regions, None, in_sample=True)
    assert v.metrics["regions_kept"] == 100.0 and [x.split(" ")[:2] for x in v.violations] == [["map", "cosine"]]
    lost = ref.copy()
    lost[1, 0, 18:26, 4:28] = 0.1  # one of four regions gone
    v = judge_output("map", kind, ref, lost, None, in_sample=False)
    assert v.metrics["regions_kept"] == 75.0 and "regions_kept 75 < 99 (prob_map)" in v.violations
    assert judge_output("map", kind, ref, ref * 0.999, None, in_sample=True).violations == []
