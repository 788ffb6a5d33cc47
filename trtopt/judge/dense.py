"""Dense maps judged as masks: the regions of thresholded probability maps, and argmax segmentation maps.

A text detector's ``[N, 1, H, W]`` probability map is used thresholded (DBNet binarizes at 0.3 before
finding boxes, the value PP-OCR ships), and each connected region of the mask becomes one box. A
pixel IoU over the whole map hides a lost small box behind the large ones (PP-OCRv4 det: map IoU
97.8 % with one box of 23 gone), so the map is judged by its regions, as the boxes are: an FP32
region is kept when a region of the variant covers it with IoU >= 0.5 (the box criterion), and a
variant region is precise when it covers an FP32 region so. A segmentation head's ``[N, C, H, W]``
logits are judged by their argmax (mean IoU over classes present in either map, PASCAL VOC's mIoU).
"""

from __future__ import annotations

import numpy as np

#: Binarization threshold of a probability map (DBNet / PP-OCR ``thresh``).
MAP_THRESHOLD = 0.3
#: Regions smaller than this many pixels are not counted (DBNet drops boxes under 3 px a side).
MIN_REGION_PIXELS = 9
#: IoU at which a region counts as found again.
REGION_IOU = 0.5


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected regions of a 2-D boolean mask: ``(labels [H, W] int32, 0 = background; count)``.

    Row runs joined by union-find (the two-pass run-based labeling of Rosenfeld and Pfaltz, 1966),
    written here because the libraries that have it (scipy.ndimage, scikit-image, OpenCV) are not
    dependencies of trtopt; cost is linear in the number of runs.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = m
    edges = np.diff(padded, axis=1)
    runs: list[tuple[int, int, int]] = []  # (row, start, end exclusive)
    for r in range(h):
        starts, ends = np.flatnonzero(edges[r] == 1), np.flatnonzero(edges[r] == -1)
        runs.extend((r, int(a), int(b)) for a, b in zip(starts, ends))
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev: list[int] = []
    row_start = 0
    for i, (r, a, b) in enumerate(runs):
        if i and runs[i - 1][0] != r:  # a new row: the runs of the row before it
            prev = [j for j in range(row_start, i) if runs[j][0] == r - 1]
            row_start = i
        for j in prev:
            if runs[j][1] <= b and a <= runs[j][2]:  # overlapping or diagonal neighbours (8-connectivity)
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    labels = np.zeros((h, w), np.int32)
    ids: dict[int, int] = {}
    for i, (r, a, b) in enumerate(runs):
        labels[r, a:b] = ids.setdefault(find(i), len(ids) + 1)
    return labels, len(ids)


def _matched(la: np.ndarray, na: int, lb: np.ndarray) -> tuple[int, int]:
    """``(regions of la counted, of them covered by a region of lb with IoU >= REGION_IOU)``."""
    area_a = np.bincount(la.ravel(), minlength=na + 1)
    area_b = np.bincount(lb.ravel())
    counted = found = 0
    for i in range(1, na + 1):
        if area_a[i] < MIN_REGION_PIXELS:
            continue
        counted += 1
        inside = np.bincount(lb[la == i])
        inside[0] = 0
        if inside.any():
            j = int(inside.argmax())
            if inside[j] / (area_a[i] + area_b[j] - inside[j]) >= REGION_IOU:
                found += 1
    return counted, found


def region_agreement(ref: np.ndarray, out: np.ndarray, threshold: float = MAP_THRESHOLD) -> dict[str, float | int]:
    """FP32 regions kept and variant regions precise (percent) of the thresholded maps ``[N, 1, H, W]``.

    Returns:
        ``regions_kept``, ``regions_precision`` (100 when there is nothing to count) and ``fp32_regions``.
    """
    kept = total = precise = made = 0
    maps = np.asarray(ref).reshape(-1, *np.shape(ref)[-2:]), np.asarray(out).reshape(-1, *np.shape(out)[-2:])
    for a, b in zip(*maps):
        (la, na), (lb, nb) = label_regions(a > threshold), label_regions(b > threshold)
        c, f = _matched(la, na, lb)
        total, kept = total + c, kept + f
        c, f = _matched(lb, nb, la)
        made, precise = made + c, precise + f
    return {"regions_kept": 100.0 * kept / total if total else 100.0,
            "regions_precision": 100.0 * precise / made if made else 100.0, "fp32_regions": total}


def _iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = int(np.count_nonzero(a | b))
    return None if union == 0 else 100.0 * int(np.count_nonzero(a & b)) / union


def map_iou(ref: np.ndarray, out: np.ndarray, threshold: float = MAP_THRESHOLD) -> dict[str, float | int]:
    """IoU (percent) of ``ref > threshold`` and ``out > threshold`` over the batch ``[N, 1, H, W]``, and its regions.

    Returns:
        ``iou`` (100 when neither map has a pixel above the threshold), ``fp32_pixels`` (count) and
        :func:`region_agreement`'s figures.
    """
    a, b = np.asarray(ref) > threshold, np.asarray(out) > threshold
    v = _iou(a, b)
    return {"iou": 100.0 if v is None else v, "fp32_pixels": int(np.count_nonzero(a)),
            **region_agreement(ref, out, threshold)}


def segmentation_iou(ref: np.ndarray, out: np.ndarray) -> dict[str, float | int]:
    """Mean IoU (percent) over classes of the argmax maps over axis 1 of ``[N, C, H, W]``.

    Returns:
        ``iou`` (mean over the classes present in either argmax map) and ``pixel_agreement`` (percent).
    """
    a, b = np.asarray(ref).argmax(1), np.asarray(out).argmax(1)
    ious = [v for c in np.union1d(np.unique(a), np.unique(b)) if (v := _iou(a == c, b == c)) is not None]
    return {"iou": float(np.mean(ious)) if ious else 100.0, "pixel_agreement": float(100.0 * np.mean(a == b))}
