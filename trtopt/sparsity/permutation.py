"""Input-channel permutation search for 2:4 pruning (the idea of apex ASP's permutation search).

Magnitude 2:4 pruning keeps the 2 largest |w| of every group of 4 *consecutive* input channels.
Which channels share a group is an accident of the layer's channel order, so reordering the
input channels of a layer (and, to keep the network's function, the output channels of the
layer producing them, plus any BatchNorm in between) can let much more magnitude survive.

The search is a steepest-ascent channel-swap: for every pair of channels in different groups
it computes the exact gain in kept magnitude of swapping them, applies the best swap, and
repeats until no swap helps. ``R[g, p, c]`` (kept magnitude of group ``g`` with position ``p``
replaced by channel ``c``) makes all gains one ``C x C`` matrix; after a swap only the two
touched groups are recomputed.
"""

from __future__ import annotations

from typing import Any

from trtopt.log import get_logger
from trtopt.sparsity.config import PruneConfig

log = get_logger(__name__)

#: modules that act per channel (or are channel-preserving), so a channel permutation passes through
_PASS_THROUGH = ("ReLU", "ReLU6", "GELU", "SiLU", "Sigmoid", "Tanh", "LeakyReLU", "Hardswish", "Hardsigmoid",
                 "ELU", "Mish", "Dropout", "Dropout1d", "Dropout2d", "Identity", "AdaptiveAvgPool1d",
                 "AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d", "AdaptiveMaxPool2d", "Flatten")
_BATCHNORM = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


def _kept(block):
    """Sum over rows of the 2 largest of the last axis (size 4)."""
    return block.topk(2, dim=-1).values.sum(-1).sum(0)


def _replacement_table(absmat, groups, chunk_elems: int = 1 << 24):
    """``R[i, p, c]``: kept magnitude of group ``groups[i]`` with position ``p`` replaced by column ``c``."""
    import torch

    A = absmat
    rows, C = A.shape
    out = torch.empty(len(groups), 4, C, dtype=A.dtype)
    step = max(1, chunk_elems // max(1, rows * C * 4))
    for s in range(0, len(groups), step):
        gs = groups[s : s + step]
        cols = (gs[:, None] * 4 + torch.arange(4)[None, :]).reshape(-1)
        base = A[:, cols].reshape(rows, len(gs), 1, 4).expand(rows, len(gs), C, 4)
        for p in range(4):
            cand = base.clone()
            cand[..., p] = A[:, None, :].expand(rows, len(gs), C)
            out[s : s + len(gs), p] = _kept(cand)
    return out


def search_permutation(absw, max_iters: int = 2000) -> tuple[list[int], float, float]:
    """Find an input-channel order that maximises the magnitude kept by 2:4 pruning.

    Args:
        absw: ``|W|`` as a ``[rows, C]`` tensor whose columns are input channels (``C % 4 == 0``).
        max_iters: Maximum number of swaps.

    Returns:
        ``(perm, kept_before, kept_after)``: new position ``i`` holds old channel ``perm[i]``.
    """
    import torch

    A = absw.detach().double().cpu().clone()  # small and sequential: the CPU is fine
    rows, C = A.shape
    G = C // 4
    perm = torch.arange(C)
    grp = torch.arange(C) // 4
    S = _kept(A.reshape(rows, G, 4))
    before = float(S.sum())
    R = _replacement_table(A, torch.arange(G)).reshape(C, C)
    same = grp[:, None] == grp[None, :]
    tol = 1e-9 * max(before, 1e-30)
    for _ in range(max_iters):
        gain = R + R.T - S[grp][:, None] - S[grp][None, :]
        gain.masked_fill_(same, float("-inf"))
        best = int(gain.argmax())
        a, b = divmod(best, C)
        if float(gain[a, b]) <= tol:
            break
        # Swap columns a and b everywhere; only groups grp[a] and grp[b] change content.
        idx = torch.tensor([b, a])
        A[:, [a, b]] = A[:, idx]
        perm[[a, b]] = perm[idx]
        R[:, [a, b]] = R[:, idx]
        touched = torch.tensor(sorted({int(grp[a]), int(grp[b])}))
        R.view(G, 4, C)[touched] = _replacement_table(A, touched)
        S[touched] = _kept(A[:, (touched[:, None] * 4 + torch.arange(4)).reshape(-1)].reshape(rows, -1, 4))
    return perm.tolist(), before, float(S.sum())


def _as_columns(weight):
    """``|W|`` of a Conv/Linear weight as ``[rows, C]`` with input channels as columns."""
    return weight.detach().abs().transpose(0, 1).reshape(weight.shape[1], -1).T


def _users(gm) -> dict:
    users: dict = {}
    for node in gm.graph.nodes:
        for arg in node.all_input_nodes:
            users.setdefault(arg, []).append(node)
    return users


def _find_producer(gm, node, modules, users, module_uses) -> tuple[Any, list[str]] | str:
    """Walk back from a consumer's input to the Conv/Linear producing it.

    Returns ``(producer_name, batchnorm_names)`` or a string saying why it cannot be permuted.
    """
    import torch.nn as nn

    bns: list[str] = []
    cur = node.args[0] if node.args else None
    while cur is not None:
        if getattr(cur, "op", None) != "call_module":
            return f"input comes from '{getattr(cur, 'target', cur)}', not a module chain"
        if len(users.get(cur, [])) != 1 or module_uses.get(cur.target, 0) != 1:
            return f"'{cur.target}' output feeds several layers"
        mod = modules[cur.target]
        kind = type(mod).__name__
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) and not isinstance(
            mod, nn.modules.conv._ConvTransposeNd
        ):
            if getattr(mod, "groups", 1) != 1:
                return f"producer '{cur.target}' is a grouped conv"
            return cur.target, bns
        if kind in _BATCHNORM:
            bns.append(cur.target)
        elif kind not in _PASS_THROUGH:
            return f"'{cur.target}' ({kind}) between producer and layer is not channel-wise"
        cur = cur.args[0] if cur.args else None
    return "no producing layer"


def _apply(modules, consumer: str, producer: str, bns: list[str], perm) -> None:
    import torch

    p = torch.as_tensor(perm, device=modules[consumer].weight.device)
    with torch.no_grad():
        cw = modules[consumer].weight
        cw.copy_(cw[:, p])
        prod = modules[producer]
        prod.weight.copy_(prod.weight[p])
        if prod.bias is not None:
            prod.bias.copy_(prod.bias[p])
        for bn_name in bns:
            bn = modules[bn_name]
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                if t is not None:
                    t.copy_(t[p])


def permute_for_sparsity_(model, names: list[str], cfg: PruneConfig) -> dict[str, dict[str, Any]]:
    """Permute the input channels of the named layers (and their producers) in place.

    The network computes the same function afterwards (up to float rounding). Layers whose
    producer cannot be found through channel-wise modules are left alone with a note.

    Args:
        model: The ``torch.nn.Module``.
        names: Eligible layer names to permute.
        cfg: Search limits.

    Returns:
        ``{name: {"permuted", "kept_before", "kept_after", "note"}}``.
    """
    import torch.fx as fx

    info: dict[str, dict[str, Any]] = {n: {"permuted": False} for n in names}
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # HF models and data-dependent control flow are not traceable
        for n in names:
            info[n]["note"] = f"permutation skipped: model not traceable by torch.fx ({type(exc).__name__})"
        return info
    modules = dict(model.named_modules())
    users = _users(gm)
    module_uses: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module_uses[node.target] = module_uses.get(node.target, 0) + 1
    by_target = {node.target: node for node in gm.graph.nodes if node.op == "call_module"}
    for name in names:
        w = modules[name].weight
        if w.shape[1] > cfg.perm_max_channels:
            info[name]["note"] = f"not permuted: {w.shape[1]} channels > perm_max_channels"
            continue
        node = by_target.get(name)
        if module_uses.get(name, 0) > 1:
            info[name]["note"] = "not permuted: layer is called more than once"
            continue
        found = _find_producer(gm, node, modules, users, module_uses) if node is not None else "not in graph"
        if isinstance(found, str):
            info[name]["note"] = f"not permuted: {found}"
            continue
        producer, bns = found
        if modules[producer].weight.shape[0] != w.shape[1]:
            info[name]["note"] = f"not permuted: '{producer}' outputs do not map 1:1 to input channels"
            continue
        perm, before, after = search_permutation(_as_columns(w), cfg.perm_max_iters)
        if after > before:
            _apply(modules, name, producer, bns, perm)
            info[name].update(permuted=True, producer=producer)
        info[name].update(kept_before=before, kept_after=after)
        log.debug("permutation %s: kept |w| %.4g -> %.4g", name, before, after)
    return info
