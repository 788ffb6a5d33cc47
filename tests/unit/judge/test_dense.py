"""Map IoU and segmentation mean IoU, against scikit-learn's Jaccard index."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import jaccard_score

from trtopt.judge.dense import map_iou, segmentation_iou


def test_map_iou_is_the_jaccard_index_of_the_thresholded_maps():
    rng = np.random.default_rng(0)
    ref = rng.uniform(size=(2, 1, 16, 16))
    out = np.clip(ref + rng.normal(scale=0.2, size=ref.shape), 0, 1)
    want = jaccard_score((ref > 0.3).ravel(), (out > 0.3).ravel())
    assert abs(map_iou(ref, out)["iou"] - 100 * want) < 1e-9


def test_segmentation_iou_is_the_mean_jaccard_over_classes():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(2, 4, 8, 8))
    out = ref + rng.normal(scale=0.5, size=ref.shape)
    want = jaccard_score(ref.argmax(1).ravel(), out.argmax(1).ravel(), average="macro")
    assert abs(segmentation_iou(ref, out)["iou"] - 100 * want) < 1e-9


def test_empty_maps_agree():
    z = np.zeros((1, 1, 4, 4))
    assert map_iou(z, z)["iou"] == 100.0


def test_regions_are_scipys_8_connected_labels():
    from scipy import ndimage

    from trtopt.judge.dense import label_regions

    mask = np.random.default_rng(2).uniform(size=(40, 50)) > 0.6
    got, n = label_regions(mask)
    want, m = ndimage.label(mask, structure=np.ones((3, 3)))
    assert n == m and n > 10
    # the same partition of the pixels (label numbers may differ)
    pairs = {(int(a), int(b)) for a, b in zip(got.ravel(), want.ravel())}
    assert len(pairs) == n + 1 and len({a for a, _ in pairs}) == len({b for _, b in pairs}) == n + 1


def test_a_lost_small_box_is_a_lost_region_though_the_map_iou_stays_high():
    from trtopt.judge.dense import region_agreement

    ref = np.zeros((1, 1, 64, 64))
    ref[0, 0, 4:30, 4:60] = 0.9  # two large text boxes and a small one
    ref[0, 0, 34:60, 4:60] = 0.9
    ref[0, 0, 31:33, 30:36] = 0.9  # 2 x 6 = 12 px between them: counted (>= 9 px)
    lost = ref.copy()
    lost[0, 0, 31:33, 30:36] = 0.1
    assert map_iou(ref, lost)["iou"] > 99.0
    r = region_agreement(ref, lost)
    assert r["fp32_regions"] == 3 and abs(r["regions_kept"] - 200 / 3) < 1e-9 and r["regions_precision"] == 100.0
    extra = ref.copy()
    extra[0, 0, 61:64, 10:14] = 0.8  # a spurious box the variant invents
    r = region_agreement(ref, extra)
    assert r["regions_kept"] == 100.0 and r["regions_precision"] == 75.0
