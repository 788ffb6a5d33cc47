"""Embedding cosine and nearest-neighbour agreement, class top-1 with its Wilson bound."""

from __future__ import annotations

import numpy as np

from trtopt.benchmark.stats import wilson_interval
from trtopt.judge.vectors import class_agreement, embedding_agreement


def test_nearest_neighbour_agreement_counts_samples_whose_neighbour_changed():
    ref = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], float)
    out = ref.copy()
    out[1] = [0.2, 0.8]  # sample 1 now sits next to samples 2/3
    res = embedding_agreement(ref, out)
    sims = lambda e: (lambda u: u @ u.T - 3 * np.eye(4))(e / np.linalg.norm(e, axis=1, keepdims=True))  # noqa: E731
    want = 100 * np.mean(sims(ref).argmax(1) == sims(out).argmax(1))
    assert res["neighbour_agreement"] == want < 100
    assert res["min_cosine"] < 0.5 < res["mean_cosine"]


def test_class_top1_is_judged_by_its_wilson_upper_bound_on_small_samples():
    ref = np.eye(10)[np.arange(50) % 10]
    out = ref.copy()
    out[0] = np.roll(out[0], 1)
    res = class_agreement(ref, out)
    assert res["top1_agreement"] == 98.0
    assert abs(res["top1_judged"] - wilson_interval(49, 50)[1]) < 1e-4  # z = 1.96 vs the exact 95 % quantile
