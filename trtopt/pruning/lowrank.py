"""Low-rank factorization: a Linear layer (or 1x1 conv) ``W [n, m]`` becomes two layers ``m -> r -> n``.

Truncated SVD ``W = U S Vh`` keeps the ``r`` largest singular values: the first layer holds
``Vh_r`` (``[r, m]``, no bias), the second ``U_r S_r`` (``[n, r]``, the original bias). By the
Eckart-Young theorem this is the best rank-``r`` approximation in Frobenius norm and its squared
error is the energy of the dropped singular values, ``sum(s[r:] ** 2)``. The MACs per position go
from ``m * n`` to ``r * (m + n)``, so a rank is used only when ``r < m * n / (m + n)``.

The factors are plain ``nn.Linear`` / ``nn.Conv2d`` layers in an ``nn.Sequential``: export, INT8
calibration and engine builds see two ordinary GEMMs. Written here (a few lines of
``torch.linalg.svd``) because no well-kept library factorizes modules in place for export.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtopt.patterns import matches
from trtopt.pruning.config import LowRankConfig


@dataclass
class RankChoice:
    """The rank chosen for one layer.

    Attributes:
        name: Module name.
        m: Input features / channels.
        n: Output features / channels.
        rank: Chosen ``r`` (``None``: left dense, see ``note``).
        energy: Share of ``sum(s**2)`` kept at ``rank``.
        note: Why the layer was left dense.
    """

    name: str
    m: int
    n: int
    rank: int | None
    energy: float = 1.0
    note: str = ""


def break_even(m: int, n: int) -> float:
    """The rank at which two factors cost as much as the dense layer: ``m * n / (m + n)``."""
    return m * n / (m + n)


def choose_rank(s, m: int, n: int, config: LowRankConfig, shrink: float = 1.0) -> int:
    """The rank by retained energy (smallest ``r`` with ``sum(s[:r]**2) >= energy * sum(s**2)``) or MACs target.

    Args:
        s: Singular values, descending (a 1-D tensor).
        m: Input features.
        n: Output features.
        config: ``energy`` or ``target_macs``.
        shrink: Share of the way from dense to the target, in (0, 1] (an iterative schedule's step).
    """
    import torch

    if config.target_macs is not None:
        return max(1, int((1 - (1 - config.target_macs) * shrink) * break_even(m, n)))
    energy = 1 - (1 - float(config.energy)) * shrink
    e = torch.cumsum(s.double() ** 2, 0)
    return min(int(torch.searchsorted(e, energy * e[-1] * (1 - 1e-12)).item()) + 1, len(s))


def factor_weight(w, rank: int):
    """Split ``w [n, m]`` into ``a [rank, m]`` and ``b [n, rank]`` with ``b @ a`` the best rank-``rank`` approximation.

    Returns:
        ``(a, b, s)`` with ``s`` all singular values of ``w`` (descending).
    """
    import torch

    u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)
    a = vh[:rank]
    b = u[:, :rank] * s[:rank]
    return a.to(w.dtype), b.to(w.dtype), s


def _factored(mod, a, b):
    import torch.nn as nn

    rank = a.shape[0]
    if isinstance(mod, nn.Linear):
        first = nn.Linear(mod.in_features, rank, bias=False)
        second = nn.Linear(rank, mod.out_features, bias=mod.bias is not None)
        first.weight.data.copy_(a)
        second.weight.data.copy_(b)
    else:
        first = nn.Conv2d(mod.in_channels, rank, 1, stride=mod.stride, padding=mod.padding, bias=False)
        second = nn.Conv2d(rank, mod.out_channels, 1, bias=mod.bias is not None)
        first.weight.data.copy_(a[:, :, None, None])
        second.weight.data.copy_(b[:, :, None, None])
    if mod.bias is not None:
        second.bias.data.copy_(mod.bias.detach())
    return nn.Sequential(first, second).to(a.device)


def _eligible(mod) -> bool:
    import torch.nn as nn

    if isinstance(mod, nn.Linear):
        return not isinstance(mod, nn.modules.linear.NonDynamicallyQuantizableLinear)
    return (isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1) and mod.groups == 1
            and mod.dilation == (1, 1) and mod.padding_mode == "zeros")


def _set(model, name: str, new) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _dense_weight(mod):
    """The ``[n, m]`` matrix of a Linear, a 1x1 conv or an earlier factor pair (``second @ first``)."""
    import torch.nn as nn

    if isinstance(mod, nn.Sequential) and getattr(mod, "_trtopt_lowrank", False):
        return (mod[1].weight.flatten(1) @ mod[0].weight.flatten(1)), mod[1], mod[0]
    return mod.weight.flatten(1), mod, mod


def factorize_(model, config: LowRankConfig, shrink: float = 1.0) -> list[RankChoice]:
    """Replace eligible layers of ``model`` by rank-``r`` factor pairs, in place.

    Args:
        model: A ``torch.nn.Module``.
        config: Rank rule, include/exclude patterns, whether 1x1 convs count.
        shrink: Share of the way from dense to the target (energy or MACs), in (0, 1]; an iterative
            schedule's step ``i`` of ``N`` passes ``i / N``. An already factorized pair is
            re-factorized from its product when the new rank is smaller.

    Returns:
        One :class:`RankChoice` per eligible layer (rank ``None`` where no rank cuts MACs).
    """
    import torch
    import torch.nn as nn

    choices: list[RankChoice] = []
    mods = dict(model.named_modules())
    pairs = {n for n, m in mods.items() if getattr(m, "_trtopt_lowrank", False)}
    for name, mod in mods.items():
        inside = any(name.startswith(p + ".") for p in pairs)
        if not (name in pairs or (_eligible(mod) and not inside)):
            continue
        kind_ok = name in pairs or isinstance(mod, nn.Linear) or config.convs
        if not kind_ok or (config.include and not matches(name, config.include)) or matches(name, config.exclude):
            continue
        with torch.no_grad():
            w, out_layer, in_layer = _dense_weight(mod)
        n, m = w.shape
        if min(m, n) < config.min_features:
            choices.append(RankChoice(name, m, n, None, note=f"min(m, n) < {config.min_features}"))
            continue
        a, b, s = factor_weight(w, min(m, n))
        rank = choose_rank(s, m, n, config, shrink)
        current = in_layer.weight.shape[0] if name in pairs else min(m, n)
        if rank >= break_even(m, n) or rank >= current:
            choices.append(RankChoice(name, m, n, current if name in pairs else None,
                                      note="" if name in pairs else "no rank below m*n/(m+n) keeps the energy"))
            continue
        energy = float((s[:rank].double() ** 2).sum() / (s.double() ** 2).sum())
        if isinstance(out_layer, nn.Linear) or isinstance(mod, nn.Linear):
            proto = nn.Linear(m, n, bias=out_layer.bias is not None)
        else:
            proto = nn.Conv2d(m, n, 1, stride=in_layer.stride, padding=in_layer.padding,
                              bias=out_layer.bias is not None)
        if out_layer.bias is not None:
            proto.bias = out_layer.bias
        new = _factored(proto, a[:rank], b[:, :rank])
        new._trtopt_lowrank = True
        _set(model, name, new)
        choices.append(RankChoice(name, m, n, rank, round(energy, 6)))
    return choices
