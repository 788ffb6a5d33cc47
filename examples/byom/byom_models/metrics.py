"""Task metric of the detector: hit rate (correct class AND IoU >= 0.5), in percent.

trtopt calls it as ``fn(outputs, labels) -> float`` (``[bench] metric = "byom_models.metrics:hit_rate"``
or ``trtopt bench --metric byom_models.metrics:hit_rate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

IOU_THRESHOLD = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two ``[N, 4]`` (cx, cy, w, h) box arrays -> ``[N]`` in [0, 1]."""
    a0, a1 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b0, b1 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod(1)
    union = np.clip(a[:, 2:], 0, None).prod(1) + np.clip(b[:, 2:], 0, None).prod(1) - inter
    return inter / np.maximum(union, 1e-12)


def _split(outputs) -> tuple[np.ndarray, np.ndarray]:
    """Find ``boxes [N, 4]`` and ``logits [N, C]`` among the model outputs (by name, else by shape)."""
    if isinstance(outputs, Mapping):
        if "boxes" in outputs and "logits" in outputs:
            return np.asarray(outputs["boxes"]), np.asarray(outputs["logits"])
        arrays = [np.asarray(v) for v in outputs.values()]
    elif isinstance(outputs, Sequence) and not isinstance(outputs, np.ndarray):
        arrays = [np.asarray(v) for v in outputs]
    else:
        raise ValueError("hit_rate needs both detector outputs (boxes [N,4] and logits [N,10]), "
                         f"got one array of shape {np.shape(outputs)}")
    boxes = [a for a in arrays if a.ndim == 2 and a.shape[1] == 4]
    logits = [a for a in arrays if a.ndim == 2 and a.shape[1] != 4]
    if len(boxes) != 1 or len(logits) != 1:
        raise ValueError(f"hit_rate needs outputs boxes [N,4] and logits [N,C]; got shapes {[a.shape for a in arrays]}")
    return boxes[0], logits[0]


def hit_rate(outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    """Percent of images whose predicted class is right AND whose box has IoU >= 0.5 with the truth.

    Args:
        outputs: Model outputs by name: ``boxes [N, 4]`` (cx, cy, w, h, normalised) and
            ``logits [N, 10]`` (unnamed outputs are told apart by their shape).
        labels: ``[N, 5]``: class, cx, cy, w, h.

    Returns:
        Hit rate in percent (0-100).

    Raises:
        ValueError: Outputs or labels of the wrong shape.
    """
    boxes, logits = _split(outputs)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != 5 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"hit_rate needs labels [N,5] (class, cx, cy, w, h) for N={boxes.shape[0]} images, "
                         f"got {labels.shape}")
    right_class = logits.argmax(1) == labels[:, 0].astype(np.int64)
    good_box = box_iou(boxes.astype(np.float64), labels[:, 1:].astype(np.float64)) >= IOU_THRESHOLD
    return float(100.0 * np.mean(right_class & good_box))
