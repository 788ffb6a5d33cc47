"""Sequences and frames: CTC decoding, token top-1, active-frame agreement, pitch within 50 cents.

* CTC: the greedy (best path) decoding of Graves et al., "Connectionist Temporal Classification",
  ICML 2006: argmax per position, merge repeats, drop the blank. A recognizer is right when its
  decoded string is; a flipped argmax on a blank run changes nothing, one on a character everything.
* Frame posteriors (note transcription, ``[N, T, F]``): most frames are silent in both models, so
  agreement is the F1 of the active (frame, bin) cells of the variant against FP32's (the frame-level
  note F1 of ``mir_eval.multipitch``), counted over frames active in either model only.
* Pitch bins (CREPE, Kim et al., ICASSP 2018: 360 bins 20 cents apart): a frame is voiced when its
  peak activation reaches the threshold; its pitch is the activation-weighted average of the cents
  of the 9 bins around the peak (CREPE's ``to_local_average_cents``); the raw pitch accuracy counts
  frames voiced in both within 50 cents (``mir_eval.melody``).
"""

from __future__ import annotations

import numpy as np


def ctc_greedy(logits: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy-decoded label sequences of ``[N, T, C]`` logits / probabilities."""
    out = []
    for path in np.asarray(logits).argmax(-1):
        keep = np.ones(len(path), bool)
        keep[1:] = path[1:] != path[:-1]
        out.append(tuple(int(c) for c in path[keep] if c != blank))
    return out


def ctc_agreement(ref: np.ndarray, out: np.ndarray, blank: int = 0, layout: str = "ntc") -> dict[str, float]:
    """Percent of samples whose greedy-decoded sequences are identical, and per-position argmax agreement.

    Args:
        ref: FP32 output, ``[N, T, C]`` (``ntc``) or ``[T, N, C]`` (``tnc``).
        out: Variant output of the same shape.
        blank: Blank class index.
        layout: ``ntc`` or ``tnc``.
    """
    if layout == "tnc":
        ref, out = np.swapaxes(ref, 0, 1), np.swapaxes(out, 0, 1)
    a, b = ctc_greedy(ref, blank), ctc_greedy(out, blank)
    same = [x == y for x, y in zip(a, b)]
    return {"sequences_identical": 100.0 * float(np.mean(same)) if same else 100.0,
            "position_agreement": float(100.0 * np.mean(np.argmax(ref, -1) == np.argmax(out, -1)))}


def token_agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Percent of tokens (positions of ``[N, T, C]``) with the same top-1 class."""
    return {"token_top1": float(100.0 * np.mean(np.argmax(ref, -1) == np.argmax(out, -1)))}


def frame_agreement(ref: np.ndarray, out: np.ndarray, threshold: float = 0.5) -> dict[str, float | int]:
    """F1 (percent) of the variant's active cells against FP32's, over frames active in either.

    Returns:
        ``active_f1`` (100 when no frame is active in either), ``active_frames`` (counted frames).
    """
    a, b = np.asarray(ref) >= threshold, np.asarray(out) >= threshold
    active = (a | b).any(-1)
    tp = int(np.count_nonzero(a & b))
    denom = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return {"active_f1": 100.0 if denom == 0 else 100.0 * 2 * tp / denom, "active_frames": int(active.sum())}


def local_average_cents(act: np.ndarray, cents_per_bin: float = 20.0) -> np.ndarray:
    """Pitch (cents relative to bin 0) of each frame of ``act`` [..., F]: weighted mean of 9 bins around the peak."""
    act = np.asarray(act, dtype=np.float64)
    f = act.shape[-1]
    peak = act.argmax(-1)
    idx = np.clip(peak[..., None] + np.arange(-4, 5), 0, f - 1)
    w = np.take_along_axis(act, idx, -1)
    cents = idx * cents_per_bin
    return (w * cents).sum(-1) / np.where(w.sum(-1) > 0, w.sum(-1), 1.0)


def pitch_agreement(ref: np.ndarray, out: np.ndarray, threshold: float = 0.5,
                    cents_per_bin: float = 20.0) -> dict[str, float | int]:
    """Voicing agreement and raw pitch agreement within 50 cents (percent) of ``[N, T, F]`` pitch bins.

    Returns:
        ``voicing`` (percent of frames voiced in both or unvoiced in both), ``pitch_within_50c`` (percent
        of frames voiced in both whose pitches differ by at most 50 cents; 100 with no such frame),
        ``voiced_frames`` (frames voiced in FP32).
    """
    va, vb = np.asarray(ref).max(-1) >= threshold, np.asarray(out).max(-1) >= threshold
    both = va & vb
    d = np.abs(local_average_cents(ref, cents_per_bin) - local_average_cents(out, cents_per_bin))[both]
    return {"voicing": float(100.0 * np.mean(va == vb)),
            "pitch_within_50c": 100.0 if not d.size else float(100.0 * np.mean(d <= 50.0)),
            "voiced_frames": int(va.sum())}
