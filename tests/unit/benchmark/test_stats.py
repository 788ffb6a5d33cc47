"""Intervals: bootstrap coverage on simulated rounds, Wilson/Clopper-Pearson against their formulas,
paired accuracy changes, and the bit packing of per-sample results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtopt.benchmark.stats import (
    bootstrap_median_ci,
    clopper_pearson,
    contains,
    pack_bits,
    paired_accuracy_change_ci,
    paired_ratio_ci,
    ratio_of_medians_ci,
    unpack_bits,
    wilson_interval,
)


def test_paired_bootstrap_covers_the_true_ratio_at_about_the_nominal_rate():
    # 400 simulated comparisons of 20 rounds: a common drift (cancels in the pairs) and 10 % noise per variant.
    rng = np.random.default_rng(7)
    true, hits, trials = 1.3, 0, 400
    for t in range(trials):
        drift = 1000 * (1 + 0.5 * np.sin(np.arange(20) / 2 + t))
        base = drift * np.exp(rng.normal(0, 0.1, 20))
        var = true * drift * np.exp(rng.normal(0, 0.1, 20))
        _, lo, hi = paired_ratio_ci(var, base, seed=t)
        hits += lo <= true <= hi
    assert 0.91 <= hits / trials <= 0.99  # nominal 0.95; percentile bootstrap of a median runs slightly low


def test_unpaired_ratio_and_median_intervals():
    rng = np.random.default_rng(0)
    hits = 0
    for t in range(200):
        a, b = 1200 * np.exp(rng.normal(0, 0.1, 20)), 1000 * np.exp(rng.normal(0, 0.1, 20))
        r, lo, hi = ratio_of_medians_ci(a, b, seed=t)
        assert r == pytest.approx(np.median(a) / np.median(b))
        hits += lo <= 1.2 <= hi
    assert 0.9 <= hits / 200 <= 1.0
    m, lo, hi = bootstrap_median_ci([5.0] * 7)
    assert (m, lo, hi) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        bootstrap_median_ci([])


def test_the_same_rounds_give_the_same_interval():
    x = np.random.default_rng(1).normal(100, 5, 20)
    assert bootstrap_median_ci(x) == bootstrap_median_ci(x)


def test_wilson_interval_matches_its_formula():
    z = 1.959963984540054
    k, n = 520, 540
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(100 * (c - h), abs=1e-6) and hi == pytest.approx(100 * (c + h), abs=1e-6)
    assert wilson_interval(10, 10)[1] == pytest.approx(100.0) and wilson_interval(10, 10)[0] < 100
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


def test_clopper_pearson_matches_the_binomial_tails():
    k, n = 3, 10
    lo, hi = clopper_pearson(k, n)
    tail_ge = lambda p: sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))  # noqa: E731
    tail_le = lambda p: sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))  # noqa: E731
    assert tail_ge(lo) == pytest.approx(0.025, abs=1e-9) and tail_le(hi) == pytest.approx(0.025, abs=1e-9)
    assert clopper_pearson(0, 5)[0] == 0.0 and clopper_pearson(5, 5)[1] == 1.0


def test_paired_accuracy_change_knows_one_image_is_noise():
    assert paired_accuracy_change_ci(0, 0, 540) == (0.0, 0.0, 0.0)  # nothing flipped: no change at all
    ch, lo, hi = paired_accuracy_change_ci(1, 0, 540)  # one image of 540 lost: -0.19 points
    assert ch == pytest.approx(-100 / 540) and lo == pytest.approx(-100 / 540) and hi > 0
    ch, lo, hi = paired_accuracy_change_ci(10, 0, 540)  # ten lost, none gained: a real drop
    p_lo = clopper_pearson(10, 10)[0]
    assert hi == pytest.approx(100 * 10 / 540 * (1 - 2 * p_lo)) and hi < -0.5
    ch, lo, hi = paired_accuracy_change_ci(5, 5, 540)  # as many gained as lost
    assert ch == 0 and lo < 0 < hi


def test_bits_round_trip_and_contains():
    flags = np.random.default_rng(0).random(541) > 0.3
    assert np.array_equal(unpack_bits(pack_bits(flags), 541), flags)
    with pytest.raises(ValueError):
        unpack_bits(pack_bits(flags), 600)
    with pytest.raises(ValueError):
        unpack_bits("not base64!", 3)
    assert contains((0.9, 1.1), 1.0) and not contains((1.01, 1.2), 1.0) and not contains(None, 1.0)


def test_every_interval_contains_its_value_and_all_right_is_exactly_100_percent():
    assert wilson_interval(512, 512)[1] == 100.0 and wilson_interval(540, 540)[1] == 100.0
    assert wilson_interval(0, 512)[0] == 0.0
    for n in (1, 7, 64, 512, 540):
        for k in range(0, n + 1, max(1, n // 16)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= 100 * k / n <= hi <= 100.0, (k, n)
    # a two-sample ratio's percentile interval need not hold the ratio of medians: it is widened to
    value, lo, hi = ratio_of_medians_ci([1.0, 2.0, 10.0, 11.0, 12.0, 13.0], [1.0, 1.0, 2.0], level=0.05)
    assert lo <= value == 10.5 <= hi
