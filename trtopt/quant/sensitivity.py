"""Per-layer INT8 sensitivity, shared by the fidelity guard and the accuracy budget.

Both ask the same question: which quantized layers hurt the most? Each layer is quantized alone
(every other one left in float), the model is run, and its outputs are compared with FP32 by
:func:`output_error`. Layers are then kept in float worst first until the caller's criterion holds
(the guard's fidelity tolerance, the budget's allowed drop).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from trtopt.calib.table import CalibrationTable
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.qdq import PreparedModel, qdq_nodes_for, quantize_qdq


def output_error(outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Sum over outputs of the normalised squared error ``|y - ref|^2 / |ref|^2`` (continuous: no ties)."""
    return float(sum(np.sum((y.astype(np.float64) - r) ** 2) / max(float(np.sum(r.astype(np.float64) ** 2)), 1e-12)
                     for y, r in zip(outs, ref)))


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes of a Q/DQ model whose activation input comes from a DequantizeLinear."""
    return [n for n, srcs in qdq_nodes_for(model).items() if srcs and srcs[0] == "DequantizeLinear"]


def only(layers: list[str], keep: str) -> tuple[str, ...]:
    """Exclusion patterns that leave only ``keep`` of ``layers`` quantized."""
    return tuple(f"^{re.escape(n)}$" for n in layers if n != keep)


def exactly(names: list[str]) -> tuple[str, ...]:
    """Exclusion patterns matching exactly ``names``."""
    return tuple(f"^{re.escape(n)}$" for n in names)


def keeping(cfg: QuantizeConfig, names: list[str]) -> QuantizeConfig:
    """``cfg`` that also keeps ``names`` in float."""
    return replace(cfg, exclude_nodes=cfg.exclude_nodes + exactly(names))


def rank_layers(model: onnx.ModelProto | PreparedModel, table: CalibrationTable, cfg: QuantizeConfig, layers: list[str],
                error: Callable[[onnx.ModelProto], float],
                say: Callable[[int, str], None] | None = None) -> dict[str, float]:
    """Each of ``layers`` quantized alone, scored by ``error`` (higher: more sensitive), worst first.

    Args:
        model: The FP32 model (prepared once: :func:`trtopt.quant.qdq.prepare_for_qdq`).
        table: Its calibration table.
        cfg: Q/DQ options (its exclusions stay excluded).
        layers: The layers the all-INT8 model quantizes (:func:`quantized_layers`).
        error: The model with one INT8 layer -> its error against FP32 (e.g. :func:`output_error`).
        say: Optional ``callback(k, layer)`` before the k-th (1-based) layer is measured.

    Returns:
        Layer -> error, most sensitive first (ties keep the graph order).
    """
    sens = {}
    for k, name in enumerate(layers, 1):
        if say is not None:
            say(k, name)
        alone = replace(cfg, exclude_nodes=cfg.exclude_nodes + only(layers, name))
        sens[name] = error(quantize_qdq(model, table, alone))
    return {k: sens[k] for k in sorted(sens, key=lambda k: -sens[k])}
