"""SmoothQuant: move activation outliers into the weights before INT8 quantization.

Transformer activations have a few input channels that are 10-100x larger than the rest
(MiniLM's FFN-down input peaks at ~25 while most channels stay below 2). With one per-tensor
INT8 scale, those channels force a scale that leaves the others a handful of levels, or
calibration clips them away; either way the embedding drifts (cosine 0.96-0.98 on MiniLM).

SmoothQuant (Xiao et al., 2023; ModelOpt's ``INT8_SMOOTHQUANT_CFG``) rescales input channel
``j`` of ``Y = X @ W`` by ``s_j``::

    Y = (X diag(1/s)) @ (diag(s) W),   s_j = max|X_j|^alpha / max|W_j,:|^(1 - alpha)

which is exact in float, flattens the activation across channels and makes the weight rows
correspondingly larger; per-output-channel weight scales absorb that well. ``alpha`` moves
the difficulty between the two (0.5 in the paper for OPT; ~0.8 suits BERT-style encoders).

In the graph ``1/s`` becomes a ``Mul`` with a constant right before the activation's Q/DQ
pair, feeding only the smoothed MatMul/Gemm nodes (other consumers, e.g. residual Adds, keep
the original tensor). TensorRT fuses that pointwise Mul into the producer / quantize kernel.
The range of the smoothed tensor is ``max_j(max|X_j| / s_j)``: max calibration of the new
tensor, computed exactly from the per-channel maxima that ``trtopt calibrate`` stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.calib.table import CalibrationTable
from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx.graph import NameGen, get_attr, initializer_array

log = get_logger(__name__)

_EPS = 1e-5  # SmoothQuant's clamp: dead channels / zero weight rows must not give 0 or inf scales


@dataclass
class SmoothResult:
    """What :func:`smooth_model` changed.

    Attributes:
        amax: Range of every new smoothed tensor (add these to the calibration table).
        smoothed: Original activation tensor -> nodes that now read its smoothed copy.
    """

    amax: dict[str, float] = field(default_factory=dict)
    smoothed: dict[str, list[str]] = field(default_factory=dict)


def _weight_rows(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray | None:
    """``max|W|`` per input channel ``K`` of a MatMul/Gemm weight, or None for unsupported layouts."""
    if w.ndim != 2 or w.dtype.kind != "f":
        return None
    trans_b = node.op_type == "Gemm" and get_attr(node, "transB", 0)
    return np.abs(w).max(axis=0 if trans_b else 1)  # MatMul B is [K, N]; Gemm transB B is [N, K]


def _scaled_weight(node: onnx.NodeProto, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    trans_b = node.op_type == "Gemm" and get_attr(node, "transB", 0)
    return (w * (s[None, :] if trans_b else s[:, None])).astype(w.dtype)


def smoothing_scales(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """Per-channel SmoothQuant scales ``s = a^alpha / w^(1-alpha)`` (float32, clamped away from 0).

    Args:
        act_max: Per-input-channel max|X| over calibration data.
        weight_max: Per-input-channel max|W| (over all weights reading X).
        alpha: Migration strength in [0, 1].
    """
    a = np.maximum(np.asarray(act_max, np.float64), _EPS)
    w = np.maximum(np.asarray(weight_max, np.float64), _EPS)
    return np.clip(a**alpha / w ** (1.0 - alpha), _EPS, 1.0 / _EPS).astype(np.float32)


def _groups(graph: onnx.GraphProto, table: CalibrationTable, selected) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the selected weighted nodes reading it as input 0 (with stats available)."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or not selected(node):
            continue
        if node.op_type == "Gemm" and get_attr(node, "transA", 0):
            continue
        act = node.input[0]
        if act in table.channel_amax and initializer_array(graph, node.input[1]) is not None:
            out.setdefault(act, []).append(node)
    return out


def smooth_model(model: onnx.ModelProto, table: CalibrationTable, alpha: float, selected=lambda n: True
                 ) -> SmoothResult:
    """Apply SmoothQuant in place to ``model`` (a float graph; call before Q/DQ insertion).

    Args:
        model: FP32 model, modified in place.
        table: Calibration table with ``channel_amax`` (written by ``trtopt calibrate``).
        alpha: Migration strength in (0, 1].
        selected: Predicate on nodes that will be quantized (excluded nodes are left alone).

    Returns:
        Ranges of the new tensors and which nodes read them.

    Raises:
        InputError: The table has no per-channel statistics.
    """
    if not table.channel_amax:
        raise InputError("SmoothQuant needs per-channel activation maxima, which this calibration table lacks "
                         "(a TensorRT cache or an older table): re-run `trtopt calibrate` on this model")
    g = model.graph
    names = NameGen(g)
    res = SmoothResult()
    muls: dict[str, onnx.NodeProto] = {}
    replaced: set[str] = set()
    for act, nodes in _groups(g, table, selected).items():
        weights = [initializer_array(g, n.input[1]) for n in nodes]
        rows = [_weight_rows(n, w) for n, w in zip(nodes, weights)]
        a = np.asarray(table.channel_amax[act], np.float64)
        if any(r is None or r.shape != a.shape for r in rows):
            log.warning("SmoothQuant skipped '%s': weight layout or channel count does not match", act)
            continue
        s = smoothing_scales(a, np.max(rows, axis=0), alpha)
        inv = names(f"{act}_smooth_inv")
        g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        out = names(f"{act}_smooth")
        muls[act] = onnx.helper.make_node("Mul", [act, inv], [out], name=names(f"{act}_smooth_Mul"))
        for node, w in zip(nodes, weights):
            # a private copy per node: the same initializer may be shared (tied weights)
            wname = names(f"{node.input[1]}_smooth")
            g.initializer.append(numpy_helper.from_array(_scaled_weight(node, w, s), wname))
            replaced.add(node.input[1])
            node.input[0], node.input[1] = out, wname
        res.amax[out] = float(np.max(a / s.astype(np.float64)))
        res.smoothed[act] = [n.name for n in nodes]
    _insert_after_producers(g, muls)
    _drop_unused_initializers(g, replaced)
    log.info("SmoothQuant (alpha %.2f) rescaled %d activations", alpha, len(muls))
    return res


def _insert_after_producers(g: onnx.GraphProto, muls: dict[str, onnx.NodeProto]) -> None:
    """Keep the node list topologically sorted: each Mul right after its input's producer."""
    if not muls:
        return
    nodes = list(g.node)
    head = [m for t, m in muls.items() if not any(t in n.output for n in nodes)]  # graph inputs
    ordered = head[:]
    for n in nodes:
        ordered.append(n)
        ordered.extend(muls[o] for o in n.output if o in muls)
    del g.node[:]
    g.node.extend(ordered)


def _drop_unused_initializers(g: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the original weights that no node reads any more (their scaled copies replaced them).

    Reads inside If/Loop/Scan bodies count (:func:`trtopt.onnx.rewrite.drop_unused_initializers`).
    """
    from trtopt.onnx.rewrite import drop_unused_initializers

    drop_unused_initializers(g, candidates)
