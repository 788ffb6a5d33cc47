"""Outputs whose argmax means nothing (boxes) are judged by cosine only: ``regression_outputs``."""

from __future__ import annotations

import numpy as np
import pytest

from trtopt.benchmark.config import BenchConfig
from trtopt.errors import ConfigError
from trtopt.judge.generic import DEFAULT_TOLERANCE, fidelity, tolerance_for, with_regression_outputs


def _boxes_with_near_ties(n=200, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.4, 0.6, size=(n, 4))  # cx, cy, w, h of centred objects: near-equal coordinates
    out = ref + rng.normal(0, 0.004, size=ref.shape)  # INT8-sized noise
    return ref, out


def test_box_output_fails_agreement_but_passes_as_regression_output():
    ref, out = _boxes_with_near_ties()
    fid = fidelity(ref, out)
    assert fid["cosine"] > 0.999  # the boxes are fine ...
    assert DEFAULT_TOLERANCE.violations(fid)  # ... but an argmax over 4 coordinates flips: read as a classifier
    tols = with_regression_outputs(DEFAULT_TOLERANCE, ["boxes"])
    assert tolerance_for(tols, "boxes").violations(fid) == []
    assert tolerance_for(tols, "logits") == DEFAULT_TOLERANCE  # the other outputs keep every check


def test_bench_config_regression_outputs():
    cfg = BenchConfig(regression_outputs=["boxes"], min_cosine=0.98)
    tols = cfg.output_tolerances()
    assert tols["boxes"].min_top1_agreement is None and tols["boxes"].min_cosine == 0.98
    assert tols["*"].min_top1_agreement == DEFAULT_TOLERANCE.min_top1_agreement
    assert BenchConfig().output_tolerances() == BenchConfig().tolerance()
    with pytest.raises(ConfigError, match="regression_outputs"):
        BenchConfig(regression_outputs=[""])


def test_evaluate_judges_boxes_by_cosine_and_names_unknown_outputs():
    from trtopt.benchmark.accuracy import evaluate

    ref, out = _boxes_with_near_ties()

    class Runner:  # a minimal runner: the variant's outputs are fixed arrays
        backend = "test"

        def input_specs(self):
            return []

        def infer(self, feeds):
            idx = feeds["i"][:, 0]
            return {"boxes": out[idx]}

    feeds = {"i": np.arange(len(ref))[:, None]}
    strict = evaluate(Runner(), feeds, reference={"boxes": ref}, batch_size=50)
    assert "boxes" in strict.violations
    res = evaluate(Runner(), feeds, reference={"boxes": ref}, batch_size=50,
                   tolerances=with_regression_outputs(DEFAULT_TOLERANCE, ["boxes"]))
    assert res.violations == {} and res.fidelity_ok
    with pytest.raises(ConfigError, match=r"\['box'\] are not outputs"):
        evaluate(Runner(), feeds, reference={"boxes": ref}, batch_size=50,
                 tolerances=with_regression_outputs(DEFAULT_TOLERANCE, ["box"]))
