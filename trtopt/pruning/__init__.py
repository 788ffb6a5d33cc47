"""Dense pruning that speeds up every GPU and CPU: fewer channels, low-rank factors; and unstructured zeros.

Public API::

    from trtopt.pruning import StructuredConfig, LowRankConfig, UnstructuredConfig, ScheduleConfig
    from trtopt.pruning import TaskData, prune_dense
    result = prune_dense(model, StructuredConfig(target_macs=0.5), {"input": x[:1]},
                         ScheduleConfig(steps=3, epochs=2, kd_alpha=0.5), TaskData((x,), y, (xt,), yt))

2:4 sparsity for sparse tensor cores is :mod:`trtopt.sparsity`. Importing this package loads neither
torch nor torch-pruning; the functions below import them lazily.
"""

from __future__ import annotations

from typing import Any

from trtopt.pruning.config import LowRankConfig, ScheduleConfig, StructuredConfig, UnstructuredConfig

__all__ = ["DenseResult", "LowRankConfig", "ScheduleConfig", "StructuredConfig", "TaskData", "UnstructuredConfig",
           "prune_dense"]

_LAZY = {"prune_dense": "trtopt.pruning.api", "DenseResult": "trtopt.pruning.result",
         "TaskData": "trtopt.pruning.schedule"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtopt.pruning' has no attribute '{name}'")
