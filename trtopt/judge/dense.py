"""Dense maps judged as masks: IoU of thresholded probability maps and of argmax segmentation maps.

A text detector's ``[N, 1, H, W]`` probability map is used thresholded (DBNet binarizes at 0.3 before
finding boxes, the value PP-OCR ships); a segmentation head's ``[N, C, H, W]`` logits by their argmax.
So the variant is judged by the IoU of those masks with FP32's (Jaccard index; mean over classes
present in either map, as in the PASCAL VOC mIoU).
"""

from __future__ import annotations

import numpy as np

#: Binarization threshold of a probability map (DBNet / PP-OCR ``thresh``).
MAP_THRESHOLD = 0.3


def _iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = int(np.count_nonzero(a | b))
    return None if union == 0 else 100.0 * int(np.count_nonzero(a & b)) / union


def map_iou(ref: np.ndarray, out: np.ndarray, threshold: float = MAP_THRESHOLD) -> dict[str, float | int]:
    """IoU (percent) of ``ref > threshold`` and ``out > threshold`` over the whole batch ``[N, 1, H, W]``.

    Returns:
        ``iou`` (100 when neither map has a pixel above the threshold) and ``fp32_pixels`` (count).
    """
    a, b = np.asarray(ref) > threshold, np.asarray(out) > threshold
    v = _iou(a, b)
    return {"iou": 100.0 if v is None else v, "fp32_pixels": int(np.count_nonzero(a))}


def segmentation_iou(ref: np.ndarray, out: np.ndarray) -> dict[str, float | int]:
    """Mean IoU (percent) over classes of the argmax maps over axis 1 of ``[N, C, H, W]``.

    Returns:
        ``iou`` (mean over the classes present in either argmax map) and ``pixel_agreement`` (percent).
    """
    a, b = np.asarray(ref).argmax(1), np.asarray(out).argmax(1)
    ious = [v for c in np.union1d(np.unique(a), np.unique(b)) if (v := _iou(a == c, b == c)) is not None]
    return {"iou": float(np.mean(ious)) if ious else 100.0, "pixel_agreement": float(100.0 * np.mean(a == b))}
