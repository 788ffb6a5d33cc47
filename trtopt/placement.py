"""TensorRT's explicit-quantization placement rules, written once for calibration, Q/DQ and the build report.

Calibration asks "which tensors need ranges" (:func:`calibration_targets`, :func:`smoothable_inputs`),
Q/DQ insertion asks "where do Q/DQ go, per which axis" (:func:`weight_axis`,
:func:`residual_skip_inputs`), and the TensorRT build report asks "which compute nodes did the Q/DQ
make INT8" (:func:`compute_nodes`). The rules follow TensorRT's developer guide ("Explicit
Quantization", Q/DQ placement) and ModelOpt's TensorRT-friendly policy:

* both inputs of every Conv / ConvTranspose / Gemm / MatMul are quantized; a constant weight per
  output channel (:func:`weight_axis`), activations per tensor;
* residual Add: TensorRT fuses the Add into the conv producing one input; the *other* (skip) input
  decides the fused output precision, so only it is quantized. As in ModelOpt's
  ``build_non_residual_input_map``, the input on the longer path to the lowest common ancestor is
  the fusing conv branch (left alone) and the shorter one is quantized.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import onnx

from trtopt.onnx.graph import constant_names, float_tensor_types, get_attr, producers
from trtopt.onnx.ops import FLOAT_TYPES, LAYOUT_OPS, WEIGHTED_OPS


def weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    """Output-channel axis of a weighted op's constant weight, or ``None`` for per-tensor."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if get_attr(node, "transB", 0) else 1
    if node.op_type == "MatMul" and weight.ndim == 2:
        return 1
    return None

def _ancestor_depths(tensor: str, prod: dict[str, onnx.NodeProto], consts: set[str],
                     limit: int = 4096) -> dict[str, int]:
    """Minimum number of nodes between each ancestor activation and ``tensor`` (BFS over producers).

    Initializers / constants are not followed: a weight or scale shared by both branches is not
    a common *ancestor* in the dataflow sense.
    """
    depth = {tensor: 0}
    queue = deque([tensor])
    while queue and len(depth) < limit:
        t = queue.popleft()
        node = prod.get(t)
        if node is None:
            continue
        for i in node.input:
            if i and i not in depth and i not in consts:
                depth[i] = depth[t] + 1
                queue.append(i)
    return depth

def _fusing_conv(tensor: str, prod: dict[str, onnx.NodeProto], quantized: set[str]) -> bool:
    """``tensor`` comes from a quantized Conv (optionally through BatchNormalization)."""
    node = prod.get(tensor)
    if node is not None and node.op_type == "BatchNormalization":
        node = prod.get(node.input[0])
    return node is not None and node.op_type in ("Conv", "ConvTranspose") and node.name in quantized

def residual_skip_inputs(graph: onnx.GraphProto, quantized: set[str]) -> dict[str, int]:
    """Map residual Add node name -> index of the skip input to quantize."""
    prod = producers(graph)
    consts = constant_names(graph)
    out: dict[str, int] = {}
    for n in graph.node:
        if n.op_type != "Add" or len(n.input) != 2 or any(i in consts for i in n.input):
            continue
        fuses = [_fusing_conv(i, prod, quantized) for i in n.input]
        if not any(fuses):
            continue
        da, db = _ancestor_depths(n.input[0], prod, consts), _ancestor_depths(n.input[1], prod, consts)
        common = set(da) & set(db)
        if common:
            lca = min(common, key=lambda t: (da[t] + db[t], t))
            longer = 0 if da[lca] > db[lca] else 1 if db[lca] > da[lca] else (0 if fuses[0] else 1)
        else:
            longer = 0 if fuses[0] else 1
        if fuses[longer]:
            out[n.name] = 1 - longer
    return out

def calibration_targets(model: onnx.ModelProto, op_types: Iterable[str] = WEIGHTED_OPS,
                        scope: str = "quantizable", types: dict[str, int] | None = None) -> list[str]:
    """Tensors whose ranges are needed: activation inputs of ``op_types`` and residual-Add skips, or all.

    Args:
        model: The FP32 model.
        op_types: Quantized (weighted) op types.
        scope: ``quantizable`` or ``all`` (every FLOAT tensor, graph inputs included).
        types: Tensor elem types (from :func:`float_tensor_types`; computed when omitted).

    Returns:
        Tensor names in graph order, without duplicates.
    """
    g = model.graph
    consts = constant_names(g)
    ops = set(op_types)
    out: dict[str, None] = {}
    types = float_tensor_types(model) if types is None else types
    if scope == "all":
        for vi in g.input:
            if vi.name not in consts and types.get(vi.name) == onnx.TensorProto.FLOAT:
                out[vi.name] = None
        for n in g.node:
            for o in n.output:
                if o and n.op_type != "Constant" and types.get(o) == onnx.TensorProto.FLOAT:
                    out[o] = None
        return list(out)
    # Only the skip input of a residual Add gets Q/DQ (the conv branch fuses into the Add), so only
    # it is calibrated: exposing the conv output as well would block ONNX Runtime's Conv+Add fusion.
    skips = residual_skip_inputs(g, {n.name for n in g.node if n.op_type in ops})
    for n in g.node:
        if n.op_type in ops:
            idx: tuple[int, ...] = (0, 1) if n.op_type in ("MatMul", "Gemm") else (0,)
        elif n.op_type == "Add" and n.name in skips:
            idx = (skips[n.name],)
        else:
            continue
        for i in idx:
            t = n.input[i] if i < len(n.input) else ""
            # integer Adds (shape / mask arithmetic) are not activations; unknown types count as float
            if t and t not in consts and types.get(t, onnx.TensorProto.FLOAT) in FLOAT_TYPES:
                out[t] = None
    return list(out)

def smoothable_inputs(model: onnx.ModelProto, op_types: Iterable[str] = ("Gemm", "MatMul")) -> list[str]:
    """Activation inputs of MatMul/Gemm nodes whose weight (input 1) is a constant.

    These are the tensors SmoothQuant can rescale per input channel (folding the inverse scale
    into the weight rows); their per-channel maxima are collected during calibration.
    """
    g = model.graph
    consts = constant_names(g)
    wanted = set(op_types) & {"Gemm", "MatMul"}
    out: dict[str, None] = {}
    for n in g.node:
        if n.op_type not in wanted or len(n.input) < 2 or n.input[0] in consts or n.input[1] not in consts:
            continue
        if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
            continue  # X^T @ B: the channel axis is not X's last axis
        out[n.input[0]] = None
    return list(out)

def compute_nodes(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, bool]]:
    """Every Conv/ConvTranspose/Gemm/MatMul of ``graph`` (top level) and whether it is quantized.

    A node is quantized when its first two inputs (activation and weight, or both MatMul operands)
    are each produced by a DequantizeLinear, directly or through layout-only ops (Transpose,
    Reshape, ...): the explicit-quantization pattern TensorRT fuses into an INT8 layer
    (TensorRT developer guide, "Explicit Quantization", Q/DQ placement). Weight-only DQ is not.

    Returns:
        ``[(node, quantized), ...]`` in graph order.
    """
    prod = producers(graph)

    def from_dq(name: str) -> bool:
        seen = 0
        while name in prod and seen < 8:
            n = prod[name]
            if n.op_type == "DequantizeLinear":
                return True
            if n.op_type not in LAYOUT_OPS or not n.input:
                return False
            name, seen = n.input[0], seen + 1
        return False

    return [(n, len(n.input) >= 2 and from_dq(n.input[0]) and from_dq(n.input[1]))
            for n in graph.node if n.op_type in WEIGHTED_OPS]
