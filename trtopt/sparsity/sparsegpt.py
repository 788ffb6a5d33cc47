"""SparseGPT one-shot 2:4 pruning (Frantar & Alistarh, 2023), for Linear and Conv layers.

For one layer with weight ``W [K, D]`` and calibration inputs ``X [D, n]``, SparseGPT minimises
``||W X - W' X||^2`` over 2:4-sparse ``W'``. It walks the columns left to right; at the start of
each group of 4 it drops the 2 weights with the smallest OBS saliency ``w^2 / [H^-1]_jj^2``, and
after zeroing each column it spreads the error onto the not-yet-processed columns with the
inverse Hessian ``H^-1`` (``H = X X^T``, Cholesky form), so the remaining weights compensate.

Convs are handled as the GEMM TensorRT runs: im2col inputs, with columns ordered
``(r, s, c)`` so that 4 consecutive columns are 4 consecutive input channels at one kernel
position — exactly TensorRT's 2:4 groups.
"""

from __future__ import annotations

import contextlib
from typing import Any

from trtopt.log import get_logger
from trtopt.sparsity.config import PruneConfig
from trtopt.sparsity.masks import magnitude_mask

log = get_logger(__name__)


class _StopForwardError(Exception):
    """Raised by a hook to end a calibration forward pass early."""


def iter_batches(calib_inputs: Any, batch_size: int = 64):
    """Yield calibration batches from a tensor/array or an iterable of batches."""
    import numpy as np
    import torch

    if isinstance(calib_inputs, np.ndarray):
        calib_inputs = torch.from_numpy(calib_inputs)
    if isinstance(calib_inputs, torch.Tensor):
        for i in range(0, len(calib_inputs), batch_size):
            yield calib_inputs[i : i + batch_size]
        return
    for b in calib_inputs:
        yield torch.from_numpy(b) if isinstance(b, np.ndarray) else b


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device) for v in batch)
    return batch.to(device) if hasattr(batch, "to") else batch


def run_batch(model, batch) -> None:
    """Call ``model`` on one batch (tensor, tuple/list of tensors, or keyword dict) on its device."""
    param = next(model.parameters(), None)
    if param is not None:
        batch = _to(batch, param.device)
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


def _supported(mod) -> str:
    import torch.nn as nn

    if isinstance(mod, nn.Linear):
        return ""
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            return "SparseGPT: padding mode not supported, magnitude used"
        return ""
    return f"SparseGPT: {type(mod).__name__} not supported, magnitude used"


def _columns(mod, x):
    """Layer input -> ``[n, D]`` rows in the column order of :func:`_as_matrix`."""
    import torch.nn as nn
    import torch.nn.functional as F

    if isinstance(mod, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(mod, nn.Conv1d):
        x = x.unsqueeze(-1)
        ks, dil = (mod.kernel_size[0], 1), (mod.dilation[0], 1)
        pad, st = (mod.padding[0], 0), (mod.stride[0], 1)
    else:
        ks, dil, pad, st = mod.kernel_size, mod.dilation, mod.padding, mod.stride
    cols = F.unfold(x, ks, dilation=dil, padding=pad, stride=st)  # [N, C*RS, L], c outer
    C, RS = mod.in_channels, cols.shape[1] // mod.in_channels
    cols = cols.reshape(cols.shape[0], C, RS, -1).permute(0, 3, 2, 1)  # -> [N, L, RS, C]
    return cols.reshape(-1, RS * C)


def _as_matrix(w):
    """Weight -> ``[K, D]`` with 4 consecutive columns = 4 consecutive input channels."""
    if w.dim() == 2:
        return w
    return w.movedim(1, -1).reshape(w.shape[0], -1)  # [K, R, S, C] -> [K, RS*C]


def _from_matrix(m, shape):
    if len(shape) == 2:
        return m
    k, c, *spatial = shape
    return m.reshape(k, *spatial, c).movedim(-1, 1)


def sparsegpt_matrix(weight, hessian, damp: float = 0.01, blocksize: int = 128):
    """Prune ``W [K, D]`` to 2:4 along D given ``H = X X^T / n``; returns ``(W_new, keep_mask)``.

    Args:
        weight: ``W [K, D]`` (any float dtype); not modified.
        hessian: ``H [D, D]``, the input second-moment matrix.
        damp: Dampening as a fraction of ``mean(diag(H))``.
        blocksize: Lazy-batch width (multiple of 4).

    Returns:
        The updated sparse weight (``W``'s dtype) and the bool keep-mask.
    """
    import torch

    W0 = weight.detach().double().clone()
    H = hessian.double().clone()
    D = W0.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W0[:, dead] = 0.0
    mean_diag = float(torch.diag(H).mean())
    for attempt in range(6):  # raise dampening until H is positive definite
        Hd = H + (damp * 10**attempt) * mean_diag * torch.eye(D, dtype=H.dtype, device=H.device)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            break
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    pruned = torch.zeros_like(W0, dtype=torch.bool)
    for i1 in range(0, D, blocksize):
        i2 = min(i1 + blocksize, D)
        W1, Hinv1 = W0[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if i % 4 == 0:  # choose the 2 of 4 with the smallest OBS saliency
                sal = W1[:, i : i + 4] ** 2 / torch.diag(Hinv1)[i : i + 4].reshape(1, -1) ** 2
                drop = sal.topk(2, dim=1, largest=False).indices
                pruned[:, i1 + i : i1 + i + 4].scatter_(1, drop, True)
            w, d = W1[:, i], Hinv1[i, i]
            q = w.masked_fill(pruned[:, i1 + i], 0.0)
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W0[:, i1:i2] = W1
        W0[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    W0[pruned] = 0.0
    return W0.to(weight.dtype), ~pruned


def _hessians(model, names: list[str], calib_inputs, stop_early: bool) -> dict[str, Any]:
    import torch

    modules = dict(model.named_modules())
    acc: dict[str, list] = {n: [None, 0] for n in names}
    pending: set[str] = set()

    def make_hook(name):
        def hook(mod, inputs, _out):
            x = _columns(mod, inputs[0].detach()).float()
            xtx = (x.T @ x).double()  # float32 GEMM (fast), float64 running sum (exact enough)
            acc[name][0] = xtx if acc[name][0] is None else acc[name][0] + xtx
            acc[name][1] += x.shape[0]
            pending.discard(name)
            if stop_early and not pending:  # every layer of the group has its input: skip the rest
                raise _StopForwardError
        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        with torch.no_grad():
            for batch in iter_batches(calib_inputs):
                pending.update(names)
                with contextlib.suppress(_StopForwardError):
                    run_batch(model, batch)
    finally:
        for h in handles:
            h.remove()
    return {n: (h / max(cnt, 1)) for n, (h, cnt) in acc.items() if h is not None}


def _input_groups(model, names: list[str], calib_inputs) -> list[list[str]]:
    """Layers in call order, grouped when consecutive layers read the very same input (Q/K/V).

    Pruning one layer of a group cannot change the others' input, so one calibration pass
    serves the whole group in sequential mode (exactly, not approximately).
    """
    import torch

    modules = dict(model.named_modules())
    calls: list[tuple[str, Any]] = []  # holding the inputs keeps their memory from being reused
    handles = [modules[n].register_forward_pre_hook(lambda _m, inp, n=n: calls.append((n, inp[0])))
               for n in names]
    try:
        with torch.no_grad(), contextlib.suppress(StopIteration):
            run_batch(model, next(iter(iter_batches(calib_inputs))))
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    seen: set[str] = set()
    prev = None
    for name, x in calls:
        if name in seen:
            continue
        if groups and x is prev:
            groups[-1].append(name)
        else:
            groups.append([name])
        seen.add(name)
        prev = x
    return groups + [[n] for n in names if n not in seen]


def sparsegpt_prune_(model, names: list[str], calib_inputs, cfg: PruneConfig) -> tuple[dict, dict]:
    """Prune the named layers with SparseGPT in place (weights are updated, masks returned).

    Args:
        model: The ``torch.nn.Module``.
        names: Eligible layer names, in execution order.
        calib_inputs: Calibration batches (see :func:`iter_batches`); re-iterable.
        cfg: Dampening, block size, sequential mode.

    Returns:
        ``(masks, notes)``; notes hold per-layer relative output error and magnitude fallbacks.
    """
    import torch

    if not isinstance(calib_inputs, torch.Tensor) and iter(calib_inputs) is calib_inputs:
        calib_inputs = list(calib_inputs)  # a generator would be exhausted after the first layer
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    masks, notes = {}, {"fallback": {}, "rel_error": {}}
    todo = [n for n in names if not _supported(modules[n])]
    for n in names:
        if _supported(modules[n]):
            notes["fallback"][n] = _supported(modules[n])
            masks[n] = magnitude_mask(modules[n].weight, axis=1)
    from trtopt.torch_util import transformer_fastpath_off

    try:  # without the fused Transformer path, whose kernels bypass the layers' hooks (and pass nested tensors)
        with transformer_fastpath_off():
            groups = _input_groups(model, todo, calib_inputs) if cfg.sparsegpt_sequential else [todo]
            for group in groups:
                hessians = _hessians(model, group, calib_inputs, stop_early=cfg.sparsegpt_sequential)
                for n in group:
                    _prune_layer(n, modules[n].weight, hessians.get(n), cfg, masks, notes)
    finally:
        model.train(was_training)
    return masks, notes


def _prune_layer(n: str, w, hessian, cfg: PruneConfig, masks: dict, notes: dict) -> None:
    """SparseGPT one layer in place given its Hessian (magnitude when it never ran)."""
    import torch

    H = hessian
    if H is None:  # the layer never ran on the calibration data
        notes["fallback"][n] = "SparseGPT: layer not reached by calibration inputs, magnitude used"
        masks[n] = magnitude_mask(w, axis=1)
        return
    Wm = _as_matrix(w.detach())
    W_new, keep = sparsegpt_matrix(Wm, H, cfg.sparsegpt_damp, cfg.sparsegpt_blocksize)
    delta, dense = Wm.double() - W_new.double(), Wm.double()
    # relative reconstruction error ||(W - W') X||^2 / ||W X||^2 on the calibration data
    err = float(torch.trace(delta @ H @ delta.T) / torch.trace(dense @ H @ dense.T).clamp_min(1e-30))
    notes["rel_error"][n] = round(err, 6)
    with torch.no_grad():
        w.copy_(_from_matrix(W_new, tuple(w.shape)))
    masks[n] = _from_matrix(keep, tuple(w.shape)).contiguous()
    log.debug("sparsegpt %s: relative output error %.4g", n, err)
