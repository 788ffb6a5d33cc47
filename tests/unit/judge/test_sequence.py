"""CTC greedy decoding, token top-1, active-frame F1 and pitch agreement, against independent computations."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from trtopt.judge.sequence import (
    ctc_agreement,
    ctc_greedy,
    frame_agreement,
    local_average_cents,
    pitch_agreement,
    token_agreement,
)


def _onehot(paths, classes=5):
    return np.eye(classes)[np.asarray(paths)]


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    assert ctc_greedy(_onehot([[0, 1, 1, 0, 1, 2, 2, 0]])) == [(1, 1, 2)]


def test_a_flip_inside_a_blank_run_keeps_the_sequence_and_a_flip_on_a_character_breaks_it():
    ref = _onehot([[0, 1, 0, 0, 2], [0, 3, 3, 0, 4]])
    out = _onehot([[0, 1, 1, 0, 2], [0, 3, 0, 0, 2]])  # sample 0: repeat merges; sample 1: 4 -> 2
    res = ctc_agreement(ref, out)
    assert res["sequences_identical"] == 50.0 and res["position_agreement"] == 70.0
    tnc = ctc_agreement(np.swapaxes(ref, 0, 1), np.swapaxes(out, 0, 1), layout="tnc")
    assert tnc == res


def test_token_top1_counts_positions():
    ref, out = _onehot([[1, 2, 3, 4]]), _onehot([[1, 2, 3, 0]])
    assert token_agreement(ref, out)["token_top1"] == 75.0


def test_active_frame_f1_is_sklearns_f1_and_ignores_frames_silent_in_both():
    rng = np.random.default_rng(0)
    ref = (rng.uniform(size=(2, 50, 88)) > 0.97) * 0.9
    out = ref.copy()
    out[0, :5] = 0.0
    out[1, 10, 3] = 0.9
    want = f1_score((ref >= 0.5).ravel(), (out >= 0.5).ravel())
    res = frame_agreement(ref, out)
    assert abs(res["active_f1"] - 100 * want) < 1e-9
    assert res["active_frames"] == int(((ref >= 0.5) | (out >= 0.5)).any(-1).sum())


def test_pitch_is_the_weighted_average_around_the_peak_and_judged_within_50_cents():
    act = np.zeros((1, 3, 360))
    act[0, 0, 100], act[0, 0, 101] = 1.0, 1.0      # halfway between bins 100 and 101: 2010 cents
    act[0, 1, 200] = 0.9
    act[0, 2, 50] = 0.1                             # unvoiced
    np.testing.assert_allclose(local_average_cents(act)[0, :2], [2010.0, 4000.0])
    out = act.copy()
    out[0, 1] = 0.0
    out[0, 1, 203] = 0.9                            # 60 cents off
    res = pitch_agreement(act, out)
    assert res["voicing"] == 100.0 and res["pitch_within_50c"] == 50.0 and res["voiced_frames"] == 2
