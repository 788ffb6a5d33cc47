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
