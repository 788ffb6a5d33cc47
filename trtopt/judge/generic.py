"""Generic fidelity of a variant's output to FP32's (the ``generic`` output kind), and its tolerances.

Why more than one cosine: a whole-tensor cosine is dominated by the largest-scale values, so a
detector whose output mixes pixel coordinates with 0-1 scores keeps cosine 0.998 while its
scores are wrong; and an argmax agreement that only looks at ``(N, C)`` outputs says nothing
about sequence outputs ``(N, T, C)`` (CTC recognizers, token logits). So :func:`fidelity`
also measures the worst channel's cosine and per-position agreement, and every comparison is
checked against :data:`DEFAULT_TOLERANCE` unless the caller gives a tolerance, so a variant that loses
the task is never reported ``ok``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trtopt.errors import ConfigError, InputError

_TOL_CHECKS = (  # (tolerance field, fidelity key(s), lower bound?)
    ("min_sqnr_db", ("sqnr_db",), True),
    ("min_cosine", ("cosine",), True),
    ("max_abs_err", ("max_abs_err",), False),
    ("min_top1_agreement", ("top1_agreement", "position_agreement"), True),
    ("min_channel_cosine", ("worst_channel_cosine",), True),
)


@dataclass(frozen=True)
class Tolerance:
    """Acceptable fidelity of one output against FP32 (``None`` disables a check).

    :data:`DEFAULT_TOLERANCE` applies when a caller gives none; :meth:`merged` overrides
    some of its fields. A floor of ``0`` (agreement) or ``-1`` (cosine) accepts anything.

    Attributes:
        min_sqnr_db: Lowest acceptable SQNR (dB).
        min_cosine: Lowest acceptable cosine similarity over the whole tensor.
        max_abs_err: Highest acceptable max absolute error.
        min_top1_agreement: Lowest acceptable top-1 agreement (percent), per sample for
            ``(N, C)`` outputs and per position for sequence outputs ``(N, T, C)``.
        min_channel_cosine: Lowest acceptable cosine of the worst channel (or declared channel
            group), which catches a small-scale channel (scores next to pixel coordinates)
            that the whole-tensor cosine cannot see.

    Raises:
        ConfigError: A value outside its range (cosines in [-1, 1], agreement in [0, 100]).
    """

    min_sqnr_db: float | None = None
    min_cosine: float | None = None
    max_abs_err: float | None = None
    min_top1_agreement: float | None = None
    min_channel_cosine: float | None = None

    def __post_init__(self) -> None:
        for name, lo, hi in (("min_cosine", -1, 1), ("min_channel_cosine", -1, 1), ("min_top1_agreement", 0, 100),
                             ("max_abs_err", 0, math.inf), ("min_sqnr_db", -math.inf, math.inf)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi):
                raise ConfigError(f"tolerance {name} must be a number in [{lo}, {hi}], got {v!r}")

    def merged(self, **overrides: float | None) -> Tolerance:
        """Return a copy with every non-``None`` override applied (``None`` keeps this value)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, float | None]:
        """Return the thresholds by field name (``None`` = not checked)."""
        return {k: getattr(self, k) for k, _, _ in _TOL_CHECKS}

    def violations(self, fid: Mapping[str, Any]) -> list[str]:
        """Return the checks ``fid`` (one output's fidelity) fails, as short strings.

        A NaN value fails every check it reaches (a comparison with NaN is false, so without
        this a NaN output would pass), and any NaN/Inf in the output is a violation of its own.
        """
        out = []
        if fid.get("nonfinite"):
            out.append(f"{int(fid['nonfinite'])} non-finite value(s) in the output")
        for attr, keys, low in _TOL_CHECKS:
            limit = getattr(self, attr)
            for key in keys:
                val = fid.get(key)
                if limit is None or val is None:
                    continue
                val = float(val)
                if math.isnan(val) or (low and val < limit) or (not low and val > limit):
                    where = f" (channel {fid.get('worst_channel')})" if key == "worst_channel_cosine" else ""
                    out.append(f"{key} {_shown(val, limit)} {'<' if low else '>'} {limit:g}{where}")
        return out


#: Applied when no tolerance is given: a variant below these is never reported ``ok``.
#: Why these values: a working INT8/FP16 variant keeps cosine >= 0.999 and flips well under
#: 1 % of argmaxes on the models we benchmark; the broken ones we have seen sat at cosine
#: 0.000-0.94, per-position agreement near 0 %, or a worst channel far below 0.99 while the
#: whole-tensor cosine read 0.998. Embedding outputs (argmax meaningless) should set
#: ``min_top1_agreement=0``.
DEFAULT_TOLERANCE = Tolerance(min_cosine=0.99, min_top1_agreement=99.0, min_channel_cosine=0.99)

def _shown(val: float, limit: float) -> str:
    """``val`` with the fewest significant digits (at least 4) that tell it from ``limit`` (0.999964, not 1)."""
    for digits in range(4, 12):
        text = f"{val:.{digits}g}"
        shown = float(text)
        if math.isnan(val) or ((shown < limit) == (val < limit) and (shown > limit) == (val > limit)):
            return text
    return f"{val:.12g}"


def tolerance_for(tolerances: Tolerance | Mapping[str, Tolerance] | None, name: str) -> Tolerance:
    """The tolerance of output ``name``.

    Args:
        tolerances: One tolerance for every output, or output name -> tolerance where the key ``"*"``
            is the default for outputs not named; ``None`` = :data:`DEFAULT_TOLERANCE`.
        name: Output name.
    """
    tol = tolerances.get(name, tolerances.get("*")) if isinstance(tolerances, Mapping) else tolerances
    return DEFAULT_TOLERANCE if tol is None else tol


def check_tolerance_names(tolerances: Tolerance | Mapping[str, Tolerance] | None, outputs: Sequence[str]) -> None:
    """Raise when per-output tolerances name an output the model does not have (a typo would be ignored).

    Raises:
        ConfigError: Naming the unknown output(s) and the model's outputs.
    """
    if isinstance(tolerances, Mapping):
        unknown = sorted(set(tolerances) - set(outputs) - {"*"})
        if unknown:
            raise ConfigError(f"tolerance / regression output(s) {unknown} are not outputs of the model "
                              f"(outputs: {list(outputs)})")


def with_regression_outputs(tol: Tolerance, regression_outputs: Sequence[str]) -> Tolerance | dict[str, Tolerance]:
    """``tol`` for every output, except no top-1/position agreement check on ``regression_outputs``.

    Why: an argmax over box coordinates, an embedding or any regression output means nothing; such an
    output is judged by its whole-tensor and worst-channel cosine only (a ``[N, 4]`` box output would
    otherwise be read as a 4-class classifier and fail on ties between nearly equal coordinates).
    """
    if not regression_outputs:
        return tol
    return {"*": tol, **{n: replace(tol, min_top1_agreement=None) for n in regression_outputs}}


#: The automatic per-channel check only splits an axis of at most this many channels (output
#: heads, box coordinates + scores, classes); wider axes (vocabularies, feature maps) stay whole.
MAX_AUTO_CHANNELS = 64


@dataclass(frozen=True)
class ChannelSplit:
    """How to cut one output into channels for the per-channel cosine.

    Attributes:
        axis: Channel axis (negative counts from the end).
        groups: Group name to channel indices on ``axis`` (e.g. ``{"boxes": [0, 1, 2, 3],
            "scores": [4]}``); ``None`` = every channel on its own.

    Raises:
        ConfigError: Empty or non-integer groups.
    """

    axis: int = -1
    groups: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self) -> None:
        if self.groups is not None:
            for name, idx in self.groups.items():
                if not len(idx) or not all(isinstance(i, int | np.integer) for i in idx):
                    raise ConfigError(f"channel group '{name}' must be a non-empty list of channel indices")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (math.isfinite(na) and math.isfinite(nb)):
        return math.nan  # NaN/Inf in either tensor: no meaningful cosine (and never a pass)
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)


def _auto_axis(shape: tuple[int, ...]) -> int | None:
    # NCHW-like outputs (4-D and up) carry channels on axis 1; (N, C) and (N, K, C) on the last axis.
    if len(shape) < 2:
        return None
    axis = 1 if len(shape) >= 4 else len(shape) - 1
    return axis if 2 <= shape[axis] <= MAX_AUTO_CHANNELS else None


def _channel_cosines(ref: np.ndarray, out: np.ndarray, split: ChannelSplit | None) -> dict[str, Any]:
    axis = _auto_axis(ref.shape) if split is None else split.axis
    if axis is None or not ref.size:
        return {}
    if not -ref.ndim <= axis < ref.ndim:
        raise InputError(f"channel axis {axis} does not exist in an output of shape {tuple(ref.shape)}")
    axis %= ref.ndim
    n = ref.shape[axis]
    groups = dict(split.groups) if split is not None and split.groups else {str(c): [c] for c in range(n)}
    r, o = np.moveaxis(ref, axis, -1), np.moveaxis(out, axis, -1)
    cos = {}
    for name, idx in groups.items():
        if any(not -n <= int(i) < n for i in idx):
            raise InputError(f"channel group '{name}' indexes past the {n} channels of axis {axis}")
        cos[name] = _cos(r[..., list(idx)], o[..., list(idx)])
    worst = min(cos, key=lambda k: (not math.isnan(cos[k]), cos[k]))  # NaN counts as worst
    return {"channel_axis": axis, "worst_channel": worst, "worst_channel_cosine": cos[worst]}


def fidelity(reference: np.ndarray, output: np.ndarray, split: ChannelSplit | None = None) -> dict[str, Any]:
    """Compare one output tensor to its FP32 reference.

    Args:
        reference: FP32 output.
        output: Variant output of the same shape.
        split: Channel axis / groups for the per-channel cosine; ``None`` = automatic: axis 1
            of 4-D+ outputs, else the last axis, when it has 2..:data:`MAX_AUTO_CHANNELS` channels.

    Returns:
        ``top1_agreement`` (percent of samples with the same argmax; ``None`` unless the output
        is ``(N, C>1)``); for sequence outputs ``(N, T, C>1)`` ``position_agreement`` (percent
        of positions with the same argmax over the last axis) and ``sequence_agreement``
        (percent of samples whose whole argmax sequence matches), else ``None``;
        ``cosine`` (over the flattened tensors); ``channel_axis``, ``worst_channel`` (name) and
        ``worst_channel_cosine`` (``None`` when no axis is split); ``max_abs_err``,
        ``mean_abs_err``, ``sqnr_db`` and ``nonfinite`` (count of NaN/Inf in ``output``).

    Raises:
        InputError: Shapes differ, or ``split`` does not fit the output.
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    if ref.shape != out.shape:
        raise InputError(f"output shape {out.shape} differs from the reference shape {ref.shape}")
    diff = out - ref
    sig, noise = float(np.sum(ref * ref)), float(np.sum(diff * diff))
    sqnr = math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig > 0 else -math.inf)
    agree = pos = seq = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        agree = float(100.0 * np.mean(ref.argmax(1) == out.argmax(1)))
    elif ref.ndim == 3 and ref.shape[2] > 1 and ref.size:
        # Sequence outputs (CTC recognizers, token logits): one argmax per position; a sample
        # agrees as a sequence only when every position does.
        same = ref.argmax(-1) == out.argmax(-1)
        pos, seq = float(100.0 * same.mean()), float(100.0 * same.all(axis=1).mean())
    res: dict[str, Any] = {"top1_agreement": agree, "position_agreement": pos, "sequence_agreement": seq,
                           "cosine": _cos(ref, out), "channel_axis": None, "worst_channel": None,
                           "worst_channel_cosine": None,
                           "max_abs_err": float(np.abs(diff).max(initial=0.0)),
                           "mean_abs_err": float(np.abs(diff).mean()) if diff.size else 0.0, "sqnr_db": sqnr,
                           "nonfinite": int(np.size(out) - np.count_nonzero(np.isfinite(out)))}
    res.update(_channel_cosines(ref, out, split))
    return res
