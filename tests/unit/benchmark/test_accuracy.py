"""Accuracy and fidelity metrics: goldens, tolerances, batching and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtopt.backends.base import Runner, TensorSpec
from trtopt.benchmark import Tolerance, evaluate, fidelity, register_metric, topk_accuracy
from trtopt.errors import ConfigError, InputError


class LinearRunner(Runner):
    """logits = x @ W (+ offset); records batch sizes it was called with."""

    backend = "fake"

    def __init__(self, w, offset=0.0, batch=None) -> None:
        super().__init__()
        self.w, self.offset, self.batch, self.seen = w, offset, batch, []

    def _activate(self):
        pass

    def input_specs(self):
        return [TensorSpec("input", (self.batch, self.w.shape[0]), np.dtype(np.float32))]

    def output_specs(self):
        return [TensorSpec("logits", (self.batch, self.w.shape[1]), np.dtype(np.float32))]

    def _infer(self, feeds):
        self.seen.append(len(feeds["input"]))
        return {"logits": (feeds["input"] @ self.w + self.offset).astype(np.float32)}


def test_fidelity_identical_is_infinite_sqnr():
    a = np.random.default_rng(0).normal(size=(10, 5))
    f = fidelity(a, a.copy())
    assert f["sqnr_db"] == math.inf
    assert f["cosine"] == pytest.approx(1.0)
    assert f["max_abs_err"] == 0 and f["mean_abs_err"] == 0 and f["top1_agreement"] == 100.0


def test_fidelity_known_offset_gives_exact_errors():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    f = fidelity(ref, ref + 0.5)
    assert f["max_abs_err"] == pytest.approx(0.5) and f["mean_abs_err"] == pytest.approx(0.5)
    assert f["sqnr_db"] == pytest.approx(10 * math.log10(30.0 / 1.0))  # signal 1+4+9+16, noise 4*0.25
    assert f["top1_agreement"] == 100.0
    flipped = fidelity(ref, ref[:, ::-1])
    assert flipped["top1_agreement"] == 0.0
    assert fidelity(np.ones(4), np.ones(4))["top1_agreement"] is None  # not a classifier output
    with pytest.raises(InputError):
        fidelity(ref, ref[:1])


def test_topk_and_metric_applicability():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]])
    assert topk_accuracy(logits, np.array([1, 1]), 1) == 50.0
    assert topk_accuracy(logits, np.array([1, 1]), 2) == 100.0
    with pytest.raises(InputError, match="does not apply"):
        topk_accuracy(np.zeros((4,)), np.zeros(4, np.int64))


def test_evaluate_batches_reference_and_tolerances():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    y = (x @ w).argmax(1)
    with LinearRunner(w) as r:
        ref = evaluate(r, x, labels=y, batch_size=4)
        assert r.seen == [4, 4, 2]
    assert ref.value == 100.0 and ref.top5 == 100.0 and ref.metric == "top1"
    assert ref.outputs.shape == (10, 6) and ref.fidelity == {}
    with LinearRunner(w, offset=0.25) as r:
        acc = evaluate(r, x, labels=y, reference=ref.outputs, batch_size=4, input_name="input",
                       tolerances=Tolerance(max_abs_err=0.1, min_top1_agreement=99.0))
    assert acc.fidelity["logits"]["max_abs_err"] == pytest.approx(0.25, abs=1e-6)
    assert acc.violations == {"logits": ["max_abs_err 0.25 > 0.1"]}
    d = acc.to_dict()
    assert {k: d[k] for k in ("metric", "value", "top5", "samples")} == {"metric": "top1", "value": 100.0,
                                                                         "top5": 100.0, "samples": len(acc.outputs)}
    assert d["ci95"][1] == 100.0 and d["ci95"][0] < 100.0  # Wilson: all right on a few samples is not certainty


def test_evaluate_pads_a_static_batch_whatever_batch_size_it_is_asked_for():
    w = np.eye(3, dtype=np.float32)
    x = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]]
    with LinearRunner(w, batch=2) as r:
        acc = evaluate(r, x, labels=np.array([0, 1, 2, 0, 1]), batch_size=2)
        assert r.seen == [2, 2, 2] and acc.outputs.shape == (5, 3) and acc.value == 100.0
        r.seen.clear()
        again = evaluate(r, x, labels=np.array([0, 1, 2, 0, 1]), batch_size=4)  # the model's fixed 2 wins
        assert r.seen == [2, 2, 2] and np.array_equal(again.outputs, acc.outputs)


def test_custom_metric_and_unknown_metric():
    register_metric("mean_logit", lambda o, y: float(o.mean()))
    w = np.eye(2, dtype=np.float32)
    with LinearRunner(w) as r:
        acc = evaluate(r, np.ones((3, 2), np.float32), labels=np.zeros(3), metric="mean_logit")
        assert acc.metric == "mean_logit" and acc.value == 1.0 and acc.top5 is None
        with pytest.raises(ConfigError, match="unknown metric"):
            evaluate(r, np.ones((3, 2), np.float32), labels=np.zeros(3), metric="bleu")
        with pytest.raises(InputError, match="does not apply"):
            evaluate(LinearRunner(np.ones((2, 1), np.float32)).__enter__(), np.ones((3, 2), np.float32),
                     labels=np.zeros(3))
