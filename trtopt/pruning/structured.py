"""Structured pruning: remove whole channels / filters / hidden units, to a MACs target.

Why a library: removing a channel is only correct when every layer coupled to it loses the same
channel: both sides of a residual add, every input of a concat, a depthwise conv together with its
producer, the BatchNorm / LayerNorm after it, an attention block's per-head projections. ``torch-pruning``
(DepGraph, Fang et al., CVPR 2023, https://github.com/VainF/Torch-Pruning) traces the network once
and groups coupled parameters for any module graph; it is the field's standard and is pure Python
(torch + numpy). trtopt keeps only what is specific to it: the importance criteria by name, the
MACs target measured on the real inputs (:func:`trtopt.pruning.result.count_macs`), protected layers
(stem, heads, user patterns) and the per-layer report. ``torch-pruning`` is the optional extra
``prune``, imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.optional import require
from trtopt.patterns import matches
from trtopt.pruning.config import StructuredConfig
from trtopt.pruning.result import count_macs

log = get_logger(__name__)

#: fine-grained pruner steps between 0 and ``max_layer_ratio`` (the MACs target is met at the first step below it)
GRANULARITY = 40


def _importance(tp, name: str):
    imp = tp.importance
    if name == "l1":
        return imp.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return imp.GroupMagnitudeImportance(p=2)
    if name == "bn_scale":
        return imp.BNScaleImportance()
    return imp.GroupTaylorImportance()


def _layer_order(model, args: tuple) -> tuple[list[Any], list[Any]]:
    """The Conv/Linear modules in execution order, and those whose output is a model output."""
    import torch
    import torch.nn as nn

    order: list[Any] = []
    outs: dict[int, Any] = {}

    def hook(mod, inp, out):
        order.append(mod)
        outs[id(out)] = mod

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            res = model(*args)
    finally:
        for h in handles:
            h.remove()
    flat = list(res) if isinstance(res, tuple | list) else [res]
    heads = [outs[id(t)] for t in flat if id(t) in outs]
    return order, heads


class StructuredPruner:
    """Channel pruning of one model to decreasing MACs targets (one DepGraph trace, many steps).

    Args:
        model: The ``torch.nn.Module`` to prune in place (channels are physically removed).
        config: Importance, ranking, protected layers, rounding.
        example: ``forward()`` arguments (tensors, batch on axis 0) used to trace the graph and count MACs.
        grad_fn: For ``taylor`` importance: called before each pruner step to leave ``.grad`` on the
            weights (one loss backward on training data).

    Raises:
        InputError: The model cannot be traced, or nothing is left to prune.
        MissingDependencyError: ``torch-pruning`` is not installed (the ``prune`` extra).
    """

    def __init__(self, model, config: StructuredConfig, example: tuple,
                 grad_fn: Callable[[], None] | None = None) -> None:
        import torch.nn as nn

        tp = require("torch_pruning", detail="structured pruning")
        self.model, self.config, self.example, self.grad_fn = model, config, example, grad_fn
        order, heads = _layer_order(model, example)
        if not order:
            raise InputError("structured pruning found no Conv or Linear layer in the model")
        ignored = [m for n, m in model.named_modules() if config.protect and matches(n, config.protect)]
        if config.protect_stem:
            ignored.append(order[0])
        if config.protect_head:
            ignored.extend(heads)
        num_heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        model.eval()
        try:
            self.pruner = tp.pruner.MetaPruner(
                model, example, importance=_importance(tp, config.importance),
                global_pruning=config.global_ranking, pruning_ratio=config.max_layer_ratio,
                max_pruning_ratio=config.max_layer_ratio, iterative_steps=GRANULARITY,
                ignored_layers=ignored, round_to=config.round_to, num_heads=num_heads)
        except (RuntimeError, TypeError, ValueError, KeyError) as exc:
            raise InputError(f"structured pruning cannot trace the model ({type(exc).__name__}: {exc})") from None
        self.dense_macs = count_macs(model, example)

    def prune_to(self, macs_fraction: float) -> int:
        """Remove channels in small steps until the MACs are at most ``macs_fraction`` of dense.

        Returns:
            The MACs per sample after pruning. When ``max_layer_ratio`` stops it above the target, the
            model is left at the smallest size reached and a warning says so.
        """
        target = macs_fraction * self.dense_macs
        macs = count_macs(self.model, self.example)
        while macs > target and self.pruner.current_step < GRANULARITY:
            if self.grad_fn is not None:
                self.model.zero_grad()
                self.grad_fn()
            self.pruner.step()
            macs = count_macs(self.model, self.example)
        if self.grad_fn is not None:
            self.model.zero_grad()
        if macs > target:
            log.warning("structured pruning stopped at %.1f %% of the dense MACs (target %.1f %%): every layer is "
                        "at prune.max_layer_ratio or protected", 100 * macs / self.dense_macs, 100 * macs_fraction)
        return macs
