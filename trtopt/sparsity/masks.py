"""2:4 masks in TensorRT's layout: groups of 4 consecutive elements along the reduction axis.

For a PyTorch Conv weight ``[K, C, R, S]`` the groups run over 4 consecutive input channels C
for every ``(k, r, s)``; for a Linear weight ``[out, in]`` they run along ``in``. In both
layouts that is axis 1. ONNX ``MatMul`` with a constant ``B [K, N]`` reduces along axis 0,
which is why every helper here takes the axis explicitly.

Only numpy is imported at module level; the torch helpers import torch when called, so the
ONNX checker can use :func:`check_2to4` without loading torch.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from trtopt.errors import InputError

GROUP = 4  # M of N:M
KEEP = 2  # N of N:M
MASK_FORMAT = "trtopt-2:4-masks/1"


def _as_numpy(weight: Any) -> np.ndarray:
    if isinstance(weight, np.ndarray):
        return weight
    if hasattr(weight, "detach"):  # torch.Tensor, without importing torch here
        return weight.detach().float().cpu().numpy()
    return np.asarray(weight)


def _groups_np(w: np.ndarray, axis: int) -> np.ndarray:
    """View ``w`` as ``[..., C // 4, 4]`` with the groups taken along ``axis``."""
    if w.ndim == 0:
        raise InputError("a scalar has no 2:4 groups")
    axis = axis % w.ndim
    moved = np.moveaxis(w, axis, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // GROUP, GROUP)


def group_zero_counts(weight: Any, axis: int = 1) -> np.ndarray:
    """Return the number of zeros in every group of 4 along ``axis``.

    Args:
        weight: Tensor or array whose ``axis`` length is a multiple of 4.
        axis: The reduction axis.

    Returns:
        Integer array of shape ``[..., C // 4]`` (the axis moved last).

    Raises:
        InputError: ``axis`` is out of range or its length is not a multiple of 4.
    """
    w = _as_numpy(weight)
    if not -w.ndim <= axis < w.ndim:
        raise InputError(f"axis {axis} is out of range for a weight of shape {list(w.shape)}")
    if w.shape[axis] % GROUP:
        raise InputError(f"axis {axis} of shape {list(w.shape)} has length {w.shape[axis]}, "
                         "not a multiple of 4")
    return (_groups_np(w, axis) == 0).sum(-1)


def check_2to4(weight: Any, axis: int = 1) -> bool:
    """Return whether every group of 4 consecutive elements along ``axis`` has at least 2 zeros.

    Args:
        weight: ``torch.Tensor`` or ``numpy`` array.
        axis: The reduction axis (1 for PyTorch Conv/Linear weights).

    Returns:
        True when the weight is 2:4 sparse in TensorRT's layout; False when some group has more
        than 2 non-zeros or the axis length is not a multiple of 4.
    """
    w = _as_numpy(weight)
    if w.ndim == 0 or not -w.ndim <= axis < w.ndim or w.shape[axis] % GROUP or w.size == 0:
        return False
    return bool((group_zero_counts(w, axis) >= GROUP - KEEP).all())


def compliant_group_share(weight: Any, axis: int = 1) -> float:
    """Share of groups of 4 along ``axis`` that hold at least 2 zeros (0.0 if the axis does not divide)."""
    w = _as_numpy(weight)
    if w.ndim == 0 or w.shape[axis] % GROUP or w.size == 0:
        return 0.0
    return float((group_zero_counts(w, axis) >= GROUP - KEEP).mean())


def magnitude_mask(score, axis: int = 1):
    """Keep the 2 largest ``|score|`` of every group of 4 along ``axis``.

    Args:
        score: ``torch.Tensor`` of importance scores (usually the weight itself).
        axis: The reduction axis; its length must be a multiple of 4.

    Returns:
        A bool tensor of ``score``'s shape, True where the weight is kept (exactly 2 per group).
    """
    import torch

    axis = axis % score.dim()
    moved = score.detach().abs().movedim(axis, -1)
    shape = moved.shape
    if shape[-1] % GROUP:
        raise InputError(f"cannot build a 2:4 mask: axis {axis} of {list(score.shape)} "
                         "is not a multiple of 4")
    groups = moved.reshape(-1, GROUP)
    # topk on ties picks deterministically by index, so a group of zeros still keeps exactly 2.
    idx = groups.topk(KEEP, dim=1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, idx, True)
    return keep.reshape(shape).movedim(-1, axis).contiguous()


def kept_magnitude_share(weight, mask) -> float:
    """Share of the total ``|w|`` that survives ``mask`` (1.0 means nothing of value was removed).

    Args:
        weight: The dense weight (torch tensor).
        mask: Bool keep-mask of the same shape.

    Returns:
        ``sum(|w| * mask) / sum(|w|)``, or 1.0 for an all-zero weight.
    """
    total = float(weight.detach().abs().sum())
    if total == 0.0:
        return 1.0
    return float((weight.detach().abs() * mask).sum()) / total


def save_masks(masks: dict, path: str | os.PathLike[str]) -> None:
    """Write a ``{layer name: bool mask}`` dict atomically with ``torch.save``.

    Args:
        masks: Masks as returned in :attr:`PruneReport.masks`.
        path: Destination file (``.pt``).
    """
    import torch

    from trtopt.fileio import atomic_path

    with atomic_path(path) as tmp:
        payload = {k: v.bool().cpu() for k, v in masks.items()}
        torch.save({"format": MASK_FORMAT, "masks": payload}, tmp)


def load_masks(path: str | os.PathLike[str]) -> dict:
    """Read a mask file written by :func:`save_masks`.

    Args:
        path: The ``.pt`` file.

    Returns:
        ``{module name: bool tensor}``.

    Raises:
        InputError: The file is missing or not a trtopt mask file.
    """
    import torch

    if not os.path.isfile(path):
        raise InputError(f"mask file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} is not a readable mask file ({type(exc).__name__})") from exc
    if not isinstance(data, dict) or data.get("format") != MASK_FORMAT or not isinstance(
        data.get("masks"), dict
    ):
        raise InputError(f"{path} is not a trtopt 2:4 mask file")
    return data["masks"]


def masked_weight(model, name: str, modules: dict | None = None):
    """The weight a mask named ``name`` applies to, or ``None``.

    Masks are keyed by layer: a module name means that module's ``weight`` (``features.3``,
    ``enc.layers.0.self_attn.out_proj``); a parameter path means that parameter
    (``enc.layers.0.self_attn.in_proj_weight``, the packed QKV projection of ``nn.MultiheadAttention``).

    Args:
        model: The ``torch.nn.Module``.
        name: The mask's key.
        modules: ``dict(model.named_modules())`` when the caller has it.
    """
    modules = dict(model.named_modules()) if modules is None else modules
    if name in modules:
        return getattr(modules[name], "weight", None)
    owner, _, attr = name.rpartition(".")
    mod = modules.get(owner)
    return None if mod is None else mod._parameters.get(attr)


def validate_masks(model, masks: dict, source: str = "mask file") -> None:
    """Check that ``masks`` fit ``model``: known layer names, weight shapes, 2:4 pattern.

    Args:
        model: The ``torch.nn.Module`` the masks are meant for.
        masks: ``{layer name: bool mask}`` (see :func:`masked_weight`).
        source: What the masks came from, for the message.

    Raises:
        InputError: One clear line naming the first mismatch.
    """
    modules = dict(model.named_modules())
    if not masks:
        raise InputError(f"{source} holds no masks")
    for name, mask in masks.items():
        weight = masked_weight(model, name, modules)
        if weight is None:
            raise InputError(f"{source} does not match the model: no layer named '{name}' with a weight")
        if tuple(mask.shape) != tuple(weight.shape):
            raise InputError(f"{source} does not match the model: mask for '{name}' has shape "
                             f"{list(mask.shape)}, the weight has {list(weight.shape)}")
        if not check_2to4(mask.float(), axis=1):  # a keep-mask is 2:4 when each group keeps <= 2
            raise InputError(f"{source}: mask for '{name}' is not a 2:4 pattern along the input channels")


def apply_masks_(model, masks: dict) -> None:
    """Zero every masked-out weight in place (``w *= mask``).

    Args:
        model: The module holding the layers.
        masks: ``{layer name: bool keep-mask}`` (see :func:`masked_weight`).
    """
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            w = masked_weight(model, name, modules)
            w.mul_(mask.to(device=w.device, dtype=w.dtype))
