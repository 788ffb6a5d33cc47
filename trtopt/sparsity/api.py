"""One entry point for 2:4 pruning, shared by ``trtopt prune`` and the recipe pipeline.

Calibration data is given the way every other stage takes it, input name -> array with samples
on axis 0 in ``forward()`` argument order, and cut into SparseGPT's batches by one rule
(:func:`calib_batches`), so the same model and data give the same masks whoever asks.

Example::

    from trtopt.sparsity import PruneConfig
    from trtopt.sparsity.api import prune
    report = prune(model, PruneConfig(method="sparsegpt"), {"x": x_calib})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trtopt.errors import InputError
from trtopt.refs import describe_exception
from trtopt.sparsity.config import PruneConfig
from trtopt.sparsity.prune import PruneReport, prune_

#: Samples per SparseGPT calibration batch.
BATCH_SIZE = 64


def calib_batches(inputs: Mapping[str, np.ndarray], batch_size: int = BATCH_SIZE) -> list[Any]:
    """Cut calibration inputs into ``forward()`` batches of ``batch_size`` samples (the last may be smaller).

    Args:
        inputs: Input name -> array, samples on axis 0, in ``forward()`` argument order.
        batch_size: Samples per batch.

    Returns:
        One ``torch.Tensor`` per batch for a one-input model, else one tuple of tensors per batch.
    """
    import torch

    arrays = list(inputs.values())
    n = len(arrays[0]) if arrays else 0
    batches = [tuple(torch.from_numpy(np.ascontiguousarray(a[i : i + batch_size])) for a in arrays)
               for i in range(0, n, batch_size)]
    return [b[0] if len(b) == 1 else b for b in batches]


def _shapes(inputs: Mapping[str, np.ndarray]) -> str:
    return ", ".join(str(list(np.shape(v))) for v in inputs.values()) or "?"


def prune(model: Any, config: PruneConfig | None = None, data: Mapping[str, np.ndarray] | None = None,
          hint: str = "") -> PruneReport:
    """Prune every eligible layer of ``model`` to 2:4, in place (:func:`trtopt.sparsity.prune.prune_`).

    Args:
        model: A ``torch.nn.Module`` (its weights are modified).
        config: Method, eligibility thresholds and include/exclude patterns.
        data: Calibration inputs for ``sparsegpt`` (name -> array, samples on axis 0, ``forward()``
            order); cut into batches by :func:`calib_batches`. Ignored by the other methods.
        hint: Appended to the error when the data does not fit the model (e.g. which flag to check).

    Returns:
        The per-layer report with the keep-masks.

    Raises:
        InputError: No eligible layer, or calibration data the model's forward refuses.
        ConfigError: ``sparsegpt`` without ``data``.
    """
    cfg = config or PruneConfig()
    calib = calib_batches(data) if data is not None and cfg.method == "sparsegpt" else None
    try:
        return prune_(model, cfg, calib_inputs=calib)
    except RuntimeError as exc:  # a forward on calibration data that does not fit the model
        if calib is None:
            raise
        raise InputError(f"calibration inputs ({_shapes(data or {})}) do not fit the model: "
                         f"{describe_exception(exc)}{'; ' + hint if hint else ''}") from None
