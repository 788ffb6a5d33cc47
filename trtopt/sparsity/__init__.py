"""2:4 structured sparsity that TensorRT will use: pruning, masked fine-tuning and checking.

Public API::

    from trtopt.sparsity import PruneConfig, prune_, FinetuneConfig, finetune_masked, check_2to4
    report = prune_(model, PruneConfig(method="sparsegpt"), calib_inputs=x_calib)
    finetune_masked(model, report, x_train, y_train, FinetuneConfig(distill_alpha=0.5), teacher=dense)
    inspect_sparsity("model.onnx", gpu="a100").to_dict()

Importing this package loads neither torch nor onnx; the functions below import them lazily.
"""

from __future__ import annotations

from typing import Any

from trtopt.sparsity.config import FinetuneConfig, PruneConfig
from trtopt.sparsity.masks import check_2to4

__all__ = [
    "FinetuneConfig", "PruneConfig", "PruneReport", "SparsityReport", "check_2to4", "finetune_masked",
    "inspect_sparsity", "load_masks", "prune_", "save_masks",
]

_LAZY = {
    "prune_": "trtopt.sparsity.prune", "PruneReport": "trtopt.sparsity.prune",
    "LayerRecord": "trtopt.sparsity.prune",
    "finetune_masked": "trtopt.sparsity.finetune",
    "save_masks": "trtopt.sparsity.masks", "load_masks": "trtopt.sparsity.masks",
    "inspect_sparsity": "trtopt.sparsity.preflight", "SparsityReport": "trtopt.sparsity.preflight",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtopt.sparsity' has no attribute '{name}'")
