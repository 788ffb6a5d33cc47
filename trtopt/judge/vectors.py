"""Vectors per sample: embeddings (cosine, nearest neighbour in the batch) and class logits (top-1).

An embedding is used by its neighbours (retrieval, clustering), so besides each sample's cosine to
FP32 the judge checks that every sample's nearest other sample in the batch (cosine similarity) is
the same under the variant: the rank agreement of a k-NN evaluation with k = 1. Class logits are
judged by top-1 agreement; on a small sample by the Wilson upper bound of the rate (E. B. Wilson,
JASA 22, 1927), so one flipped near-tie among a few dozen samples is not taken for a loss.
"""

from __future__ import annotations

import math

import numpy as np

#: Below this many samples a top-1 agreement is judged by its Wilson upper bound.
SMALL_SAMPLE = 1000


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def embedding_agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float | None]:
    """Cosine of each sample's embedding to FP32's, and nearest-neighbour agreement within the batch.

    Returns:
        ``mean_cosine``, ``min_cosine``, and ``neighbour_agreement`` (percent of samples whose nearest
        other sample is the same; ``None`` with fewer than 3 samples, where it means nothing).
    """
    a, b = _unit(ref), _unit(out)
    cos = (a * b).sum(1)
    nn = None
    if len(a) >= 3:
        sa, sb = a @ a.T, b @ b.T
        np.fill_diagonal(sa, -np.inf)
        np.fill_diagonal(sb, -np.inf)
        nn = float(100.0 * np.mean(sa.argmax(1) == sb.argmax(1)))
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "neighbour_agreement": nn}


def wilson_upper(agree_pct: float, n: int, z: float = 1.96) -> float:
    """Upper end (percent) of the Wilson score interval of an agreement rate measured on ``n`` trials.

    The formula of :func:`trtopt.benchmark.stats.wilson_bounds` (never below the rate, exactly 100 at 100 %),
    written out here because the judge sits below the benchmark package and must not import it.
    """
    if n <= 0:
        return 100.0
    p = min(max(agree_pct / 100.0, 0.0), 1.0)
    if p >= 1.0:
        return 100.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100.0 * min(1.0, max(centre + half, p))


def class_agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float | int]:
    """Top-1 agreement (percent) of ``[N, C]`` logits, and the rate judged (its Wilson upper bound when small).

    Returns:
        ``top1_agreement``, ``top1_judged`` and ``samples``.
    """
    n = len(ref)
    top1 = float(100.0 * np.mean(np.argmax(ref, 1) == np.argmax(out, 1))) if n else 100.0
    return {"top1_agreement": top1, "top1_judged": wilson_upper(top1, n) if n < SMALL_SAMPLE else top1,
            "samples": n}
