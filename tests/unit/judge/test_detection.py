"""Detections kept: decode, threshold, class-wise NMS and one-to-one matching against FP32."""

from __future__ import annotations

import numpy as np

from trtopt.judge.detection import decode, detection_agreement, iou_matrix, nms


def _head(rows, anchors=50, classes=2):
    """[1, 4+C, A] with the given (cx, cy, w, h, class, score) rows, the rest background (scores 0.01)."""
    h = np.zeros((1, 4 + classes, anchors), np.float32)
    h[0, :4] = 10.0
    h[0, 4:] = 0.01
    for a, (cx, cy, w, ht, c, s) in enumerate(rows):
        h[0, :4, a] = (cx, cy, w, ht)
        h[0, 4 + c, a] = s
    return h


def test_iou_of_hand_computed_boxes():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0.0]])


def test_nms_drops_overlapping_boxes_of_one_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 0]))
    assert keep.tolist() == [0, 2, 3]  # box 1 suppressed by box 0 (IoU 0.82); box 2 is another class


def test_decode_converts_xywh_and_thresholds_confidence():
    dets = decode(_head([(20, 20, 10, 10, 1, 0.9), (80, 80, 10, 10, 0, 0.1)]), threshold=0.25)[0]
    np.testing.assert_allclose(dets.boxes, [[15, 15, 25, 25]])
    assert dets.classes.tolist() == [1]


def test_kept_and_precision_match_a_hand_count():
    objects = [(20, 20, 10, 10, 0, 0.9), (60, 20, 10, 10, 1, 0.8), (100, 20, 10, 10, 0, 0.7)]
    ref = _head(objects)
    var = _head([(21, 20, 10, 10, 0, 0.85),   # kept (IoU 0.82)
                 (60, 20, 10, 10, 0, 0.8),    # right box, wrong class: a miss and a false detection
                 (107, 20, 10, 10, 0, 0.7),   # shifted 7 px: IoU 3/17 < 0.5, a miss and a false detection
                 (200, 200, 10, 10, 1, 0.6)])  # spurious
    res = detection_agreement(ref, var)
    assert res["fp32_detections"] == 3 and res["variant_detections"] == 4
    assert res["kept"] == 100 / 3 and res["precision"] == 25.0


def test_channels_last_and_objectness_layouts_decode_the_same_detections():
    ref = _head([(20, 20, 10, 10, 0, 0.9), (60, 20, 10, 10, 1, 0.8)])
    obj = np.concatenate([ref[:, :4], np.ones_like(ref[:, :1]), ref[:, 4:]], axis=1)
    a = decode(ref)[0]
    b = decode(np.moveaxis(obj, 1, 2), layout="clast", objectness=True)[0]
    np.testing.assert_allclose(a.boxes, b.boxes)
    assert a.classes.tolist() == b.classes.tolist()


def test_no_detections_in_either_model_is_full_agreement():
    res = detection_agreement(_head([]), _head([]))
    assert res["kept"] == 100.0 and res["precision"] == 100.0
