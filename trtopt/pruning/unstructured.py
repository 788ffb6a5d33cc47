"""Unstructured L1-magnitude pruning with ``torch.nn.utils.prune``, made permanent.

``l1_unstructured`` (or ``global_unstructured`` with one threshold across layers) zeroes the
smallest |w|, then ``prune.remove`` folds the mask into the weight so the module is an ordinary
dense one again (no ``weight_orig`` / ``weight_mask`` left for the export to trip on).

What it buys: a smaller file once compressed (zeros compress). What it does not: speed. TensorRT
and ONNX Runtime run the dense kernels whatever the zeros; only the 2:4 pattern runs faster, on
sparse tensor cores (Ampere and later). For speed on every GPU, use structured pruning.
"""

from __future__ import annotations

from trtopt.errors import InputError
from trtopt.patterns import matches
from trtopt.pruning.config import UnstructuredConfig

#: printed with every unstructured result
SPEED_NOTE = ("unstructured zeros do not make TensorRT or ONNX Runtime faster (dense kernels run them): they "
              "only make a compressed file smaller; use --method structured (any GPU) or 2:4 (sparse tensor cores) "
              "for speed")


def prune_unstructured_(model, config: UnstructuredConfig) -> dict[str, float]:
    """Zero the smallest-magnitude weights of every selected Conv/Linear layer, in place and permanently.

    Args:
        model: A ``torch.nn.Module``.
        config: Amount, per-layer or global threshold, include/exclude patterns.

    Returns:
        Module name -> share of exact-zero weights after pruning.

    Raises:
        InputError: No Conv/Linear layer selected.
    """
    import torch
    import torch.nn as nn
    from torch.nn.utils import prune

    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
              and (not config.include or matches(n, config.include)) and not matches(n, config.exclude)]
    if not layers:
        raise InputError("unstructured pruning selected no Conv or Linear layer (check --include/--exclude)")
    if config.global_ranking:
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                  amount=config.amount)
    else:
        for _, m in layers:
            prune.l1_unstructured(m, "weight", amount=config.amount)
    for _, m in layers:
        prune.remove(m, "weight")
    with torch.no_grad():
        return {n: round(float((m.weight == 0).float().mean()), 6) for n, m in layers}
