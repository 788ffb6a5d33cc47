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
