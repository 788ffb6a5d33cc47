"""Entropy / percentile / mse thresholds on hand-built histograms, and agreement with an independent
re-implementation of pytorch-quantization's published ``_compute_amax_entropy``."""

from __future__ import annotations

import functools
import time
from collections import Counter

import numpy as np
import pytest
from scipy.stats import entropy

from trtopt.calib import (
    AbsHistogram,
    amax_entropy,
    amax_mse,
    amax_percentile,
    compute_amax,
)


def reference_entropy_amax(calib_hist, calib_bin_edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """pytorch-quantization ``_compute_amax_entropy`` (calib/histogram.py), transcribed loop by loop.

    The per-bin Python loops of the original are replaced by ``np.add.at`` / fancy indexing with the
    same semantics (digitize over linspace, Counter of bucket sizes excluding empty bins, scipy KL,
    last argmin) so the test stays fast.
    """
    bins = np.array(calib_hist, dtype=np.float64)
    bins[0] = bins[1]
    total_data = np.sum(bins)
    divergences, arguments = [], []
    nbins = 1 << (num_bits - 1 + int(unsigned))
    for i in range(start_bin, len(bins) + 1, stride):
        new_density_counts = np.zeros(nbins, dtype=np.float64)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1
        digitized_space[bins[:i] == 0] = -1
        ok = digitized_space != -1
        np.add.at(new_density_counts, digitized_space[ok], bins[:i][ok])
        counter = Counter(digitized_space.tolist())
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        new_density[ok] = new_density_counts[digitized_space[ok]]
        total_counts_new = np.sum(new_density) + np.sum(bins[i:])
        reference_density = np.array(bins[: len(digitized_space)])
        reference_density[-1] += np.sum(bins[i:])
        assert round(total_counts_new) == total_data and round(np.sum(reference_density)) == total_data
        divergences.append(entropy(reference_density, new_density))
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return float(calib_bin_edges[last_argmin * stride + start_bin])


def _hist_from(samples_batches, num_bins=2048):
    h = AbsHistogram(num_bins)
    for b in samples_batches:
        h.update(b)
    return h


@functools.cache
def _fixed_histograms():
    rng = np.random.default_rng(1234)
    cases = {
        "gaussian": [rng.standard_normal(20000) for _ in range(3)],
        "relu_gaussian": [np.maximum(rng.standard_normal(20000), 0) for _ in range(3)],
        "laplace": [rng.laplace(size=20000) for _ in range(3)],
        "student_t2": [rng.standard_t(2, size=20000) for _ in range(3)],  # heavy tail
        "cauchy": [rng.standard_cauchy(20000)],  # very heavy tail (one batch: 2048 bins)
        "lognormal": [rng.lognormal(0, 1.2, 20000) for _ in range(2)],
        "outliers": [np.concatenate([rng.uniform(0, 1, 20000), [40.0, 55.0]])],
        "growing": [rng.standard_normal(5000) * s for s in (1, 1.5, 2)],  # bins appended twice
    }
    return {k: _hist_from(v) for k, v in cases.items()}  # entropy runs on the used bins, as calibrate does


@pytest.mark.parametrize("name", sorted(_fixed_histograms()))
def test_entropy_agrees_with_published_algorithm_within_1pct(name):
    h = _fixed_histograms()[name]
    mine = amax_entropy(h.used_counts, h.used_edges)
    ref = reference_entropy_amax(h.used_counts, h.used_edges)
    assert mine == pytest.approx(ref, rel=0.01), (name, mine, ref)


def test_entropy_clips_far_outlier():
    counts = np.zeros(2048, dtype=np.int64)
    counts[:300] = np.round(1e5 * np.exp(-np.arange(300) / 60))  # decaying bulk in the first 300 bins
    counts[2047] = 1  # one far outlier
    edges = np.arange(2049, dtype=np.float64)
    assert amax_entropy(counts, edges) == 300.0  # keeps exactly the bulk, drops the outlier
    # (a *uniform* bulk would keep everything: Q == P when empty bins get no mass, KL 0 at i=2048)
    assert compute_amax("minmax", counts, edges, exact_max=2047.5) == 2047.5


def test_entropy_takes_last_minimum_on_ties():
    # uniform mass in bins 0..63: Q == P for every candidate (KL 0 everywhere) -> last candidate wins
    counts = np.zeros(2048, dtype=np.int64)
    counts[:64] = 10
    edges = np.linspace(0, 2.0, 2049)
    assert amax_entropy(counts, edges) == pytest.approx(2.0)
    assert reference_entropy_amax(counts, edges) == pytest.approx(2.0)


def test_entropy_zero_bin_replaced_by_neighbour():
    # a huge zero bin (post-ReLU) must not drive the threshold: bins[0] = bins[1]
    counts = np.zeros(2048, dtype=np.int64)
    counts[:300] = np.round(1e5 * np.exp(-np.arange(300) / 60))
    counts[2047] = 1
    edges = np.arange(2049, dtype=np.float64)
    spiked = counts.copy()
    spiked[0] = 10**10
    assert amax_entropy(spiked, edges) == amax_entropy(counts, edges) == 300.0
    assert spiked[0] == 10**10  # the caller's histogram is not modified


def test_percentile_and_mse_on_hand_built_histogram():
    counts = np.zeros(2048, dtype=np.int64)
    counts[:1000] = 10000
    counts[1999] = 1
    edges = np.arange(2049, dtype=np.float64)
    assert amax_percentile(counts, edges, 50.0) == pytest.approx(500.0, abs=1)
    assert amax_percentile(counts, edges, 99.9) == pytest.approx(999.0, abs=1)
    mse = amax_mse(counts, edges)
    assert 900 <= mse <= 1100  # covers the bulk, ignores the single outlier


def test_histogram_width_is_a_power_of_two_and_counts_are_exact_binning():
    h = AbsHistogram(num_bins=100)  # rounded up to 128 bins
    h.update(np.array([0.0, 0.5, 1.0, -1.0]))
    assert h.num_bins == 128 and h.width == 2.0**-6  # smallest 2**e with 1.0 < 2**e * 128
    h.update(np.array([2.5]))  # beyond the range: bins merged pairwise, width doubled twice
    assert h.width == 2.0**-5 and len(h.counts) == 128
    # independent reference: numpy floor(|x| / width) at the final width
    ref = np.bincount(np.floor(np.abs([0.0, 0.5, 1.0, -1.0, 2.5]) / h.width).astype(int), minlength=128)
    assert np.array_equal(h.counts, ref) and h.amax == 2.5 and h.used == 81


def test_histogram_zero_batches_and_exploding_ranges_stay_bounded():
    h = AbsHistogram(num_bins=64)
    h.update(np.zeros(10))  # an all-zero batch cannot fix the width ...
    assert h.counts is None
    h.update(np.array([0.5, 1.0]))  # ... its zeros land in bin 0 once a range exists
    assert h.counts[0] == 10 and h.counts.sum() == 12 and len(h.counts) == 64
    h.update(np.array([-3.4e38], dtype=np.float32))  # e.g. an additive attention mask
    assert len(h.counts) <= 64 * 64 and h.counts.sum() == 13 and h.amax == pytest.approx(3.4e38, rel=1e-6)
    assert amax_entropy(h.counts, h.edges) > 0


def test_methods_on_huge_histograms_stay_bounded():
    h = AbsHistogram(num_bins=1 << 16)  # a user asking for 65536 bins
    h.update(np.random.default_rng(4).standard_normal(100000).astype(np.float32))
    for method in ("mse", "entropy", "percentile"):
        from trtopt.calib.methods import compute_amax

        t0 = time.perf_counter()
        a = compute_amax(method, h.used_counts, h.used_edges, h.amax, start_bin=128)
        assert 0 < a <= h.amax * 1.001 and time.perf_counter() - t0 < 20, method
