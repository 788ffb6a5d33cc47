"""Check an ONNX model's Conv/Gemm/MatMul weights for 2:4 along the axis TensorRT prunes.

The axis per op follows NVIDIA Polygraphy's sparsity checker: Conv weight axis 1 (input
channels); Gemm B axis 1 when ``transB=1`` else 0 (A: axis 1, or 0 with ``transA=1``);
MatMul constant B axis ``-2`` (its K rows), constant A axis ``-1``. The weight is traced back
through DequantizeLinear/QuantizeLinear/Cast/Identity (axis kept) and Transpose (axis mapped
through ``perm``), so Q/DQ INT8 models from the quantizer are checked on their stored weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trtopt.log import get_logger
from trtopt.sparsity.masks import GROUP, KEEP

log = get_logger(__name__)

_LOOK_THROUGH = ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity", "Transpose")
#: below this many channels TensorRT usually keeps dense kernels (NVIDIA, TensorRT issues #3849/#4065)
SMALL_CHANNELS = 256


@dataclass
class OnnxLayer:
    """2:4 status of one constant-weight Conv/Gemm/MatMul.

    Attributes:
        node: Node name.
        op: ``Conv``, ``Gemm`` or ``MatMul``.
        weight: Name of the stored constant (after looking through Q/DQ/Cast/Transpose).
        shape: Weight shape as the op sees it.
        axis: Pruning axis in ``shape``.
        eligible: TensorRT could run it with sparse math (axis multiple of 4, groups=1, float/int8).
        compliant: Every group of 4 along ``axis`` has at least 2 zeros.
        reason: Why it is not eligible / not compliant, or a size note.
        reduction: Length of the pruning axis.
        out_channels: Output channels (K of the GEMM).
        flops: Weight FLOPs per sample (2 x MACs; shape inference, batch = 1).
        compliant_group_share: Share of groups of 4 that already hold 2 zeros.
        large_enough: Both channel counts are at least ~256 (where sparse kernels tend to win).
        path: Ops looked through between the weight and the layer.
    """

    node: str
    op: str
    weight: str
    shape: list[int]
    axis: int
    eligible: bool
    compliant: bool
    reason: str
    reduction: int
    out_channels: int
    flops: int
    compliant_group_share: float
    large_enough: bool
    path: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def _constants(graph) -> dict[str, Any]:
    from onnx import numpy_helper

    out = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
    return {k: numpy_helper.to_array(v) for k, v in out.items()}


def _trace(name: str, axis: int, ndim: int | None, prod: dict,
           consts: dict) -> tuple[str, int, list[str], np.ndarray | None, Any]:
    """Follow ``name`` back to a constant; returns (const name, axis in it, path, array, zero point)."""
    path, zero_point = [], None
    while name not in consts:
        node = prod.get(name)
        if node is None or node.op_type not in _LOOK_THROUGH:
            return name, axis, path, None, None
        path.append(node.op_type)
        if node.op_type == "Transpose":
            from trtopt.onnx.graph import get_attr

            perm = get_attr(node, "perm")
            if perm is None:  # default perm reverses the axes
                rank = ndim if ndim is not None else 2
                perm = list(range(rank))[::-1]
            axis = perm[axis % len(perm)]
        if node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[2] in consts:
            zero_point = consts[node.input[2]]
        name = node.input[0]
    return name, axis, path, consts[name], zero_point


def _weight_input(node, consts, prod) -> tuple[int, int] | None:
    """(input index of the constant weight, pruning axis in the op's view) or None."""
    from trtopt.onnx.graph import get_attr

    def is_const(i: int) -> bool:
        return len(node.input) > i and _trace(node.input[i], 0, None, prod, consts)[3] is not None

    if node.op_type == "Conv":
        return (1, 1) if is_const(1) else None
    if node.op_type == "Gemm":
        if is_const(1):
            return 1, 1 if get_attr(node, "transB", 0) else 0
        if is_const(0):
            return 0, 0 if get_attr(node, "transA", 0) else 1
        return None
    if node.op_type == "MatMul":
        if is_const(1):
            return 1, -2
        if is_const(0):
            return 0, -1
    return None


def _out_elems(node, shapes: dict) -> int | None:
    dims = shapes.get(node.output[0])
    if not dims:
        return None
    vals = [d if isinstance(d, int) and d > 0 else 1 for d in dims[1:]]  # drop batch / symbolic dims
    return int(np.prod(vals)) if vals else 1


def _zero_groups(arr: np.ndarray, axis: int, zero_point) -> np.ndarray:
    zero = 0 if zero_point is None or np.ndim(zero_point) else zero_point.item()
    moved = np.moveaxis(arr, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // GROUP, GROUP)
    return (groups == zero).sum(-1) >= GROUP - KEEP


def _out_channels(op: str, shape: list[int], ax: int) -> int:
    """Output channels (the GEMM's N) for a weight of ``shape`` pruned along ``ax``."""
    if op == "Conv":
        return shape[0]
    return shape[-1] if ax == len(shape) - 2 else shape[-2] if len(shape) >= 2 else 1


def _status(node, arr: np.ndarray, red: int) -> str:
    """Why the layer cannot run sparse at all ("" when it is eligible)."""
    from trtopt.onnx.graph import get_attr

    group = get_attr(node, "group", 1)
    if node.op_type == "Conv" and group != 1:
        return f"grouped/depthwise conv (group={group}): no sparse kernels"
    if arr.dtype.kind not in ("f", "i", "u"):
        return f"weight dtype {arr.dtype} cannot run sparse"
    if red % GROUP:
        return f"pruning axis length {red} is not a multiple of 4"
    return ""


def _layer(node, idx: int, axis: int, consts, prod, shapes) -> OnnxLayer:
    src, src_axis, path, arr, zp = _trace(node.input[idx], axis, None, prod, consts)
    op_shape = list(arr.shape)  # the shape the op sees differs only behind a Transpose
    seen = shapes.get(node.input[idx])
    if "Transpose" in path and seen and all(isinstance(d, int) and d > 0 for d in seen):
        op_shape = list(seen)
    ax = axis % len(op_shape)
    red, out_ch = op_shape[ax], _out_channels(node.op_type, op_shape, ax)
    reason = _status(node, arr, red)
    eligible, compliant, share = not reason, False, 0.0
    if eligible:
        ok = _zero_groups(arr, src_axis % arr.ndim, zp)
        compliant, share = bool(ok.all()), float(ok.mean())
        if not compliant:
            reason = (f"not 2:4: {100 * (1 - share):.1f}% of groups of 4 along axis {ax} "
                      "have more than 2 non-zeros")
    large = min(red, out_ch) >= SMALL_CHANNELS
    if eligible and not large:
        note = (f"small layer ({red} in x {out_ch} out < ~{SMALL_CHANNELS}): "
                "TensorRT usually keeps dense kernels")
        reason = f"{reason}; {note}" if reason else note
    out_elems = _out_elems(node, shapes)
    macs_per_out = int(np.prod(op_shape)) // out_ch if node.op_type == "Conv" else red
    flops = 2 * macs_per_out * out_elems if out_elems is not None else 2 * int(np.prod(op_shape))
    return OnnxLayer(node=node.name or node.output[0], op=node.op_type, weight=src, shape=op_shape,
                     axis=ax, eligible=eligible, compliant=compliant, reason=reason, reduction=red,
                     out_channels=out_ch, flops=int(flops), compliant_group_share=round(share, 6),
                     large_enough=large, path=path)


def _inferred_shapes(model) -> dict[str, list]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # shape inference is best effort; FLOPs fall back to weight size
        log.debug("shape inference failed: %s", exc)
        inferred = model
    g = inferred.graph
    out = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return out


def _share(layers: list[OnnxLayer], total: int, attr: str) -> float:
    return round(sum(ly.flops for ly in layers if getattr(ly, attr)) / total, 6) if total else 0.0


def check_onnx_layers(model) -> tuple[list[OnnxLayer], dict[str, Any]]:
    """Check every constant-weight Conv/Gemm/MatMul of an ONNX model.

    Args:
        model: ``onnx.ModelProto``.

    Returns:
        ``(layers, summary)``; summary has ``eligible``, ``compliant``, ``sparse_flop_share``
        (weight FLOPs in compliant layers / all constant-weight Conv/Gemm/MatMul FLOPs), counts, and
        ``control_flow`` (``{subgraph path: {op: count}}`` of Conv/Gemm/MatMul inside If/Loop/Scan,
        which are not checked) with a one-line ``control_flow_note``.
    """
    graph = model.graph
    consts = _constants(graph)
    prod = {o: n for n in graph.node for o in n.output if o}
    shapes = _inferred_shapes(model)
    layers, non_const = [], 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        found = _weight_input(node, consts, prod)
        if found is None:
            non_const += 1
            continue
        layers.append(_layer(node, found[0], found[1], consts, prod, shapes))
    total = sum(ly.flops for ly in layers)
    from trtopt.onnx.walk import describe_subgraph_ops, subgraph_op_counts

    inside = subgraph_op_counts(graph, ("Conv", "Gemm", "MatMul"))
    summary = {
        "layers": len(layers),
        "eligible": sum(ly.eligible for ly in layers),
        "compliant": sum(ly.compliant for ly in layers),
        "compliant_large": sum(ly.compliant and ly.large_enough for ly in layers),
        "sparse_flop_share": _share(layers, total, "compliant"),
        "eligible_flop_share": _share(layers, total, "eligible"),
        "skipped_non_constant_weight": non_const,
        # Conv/Gemm/MatMul inside If/Loop/Scan bodies: counted, not checked (see control_flow_note)
        "control_flow": inside,
        "control_flow_note": (f"not checked: {describe_subgraph_ops(inside)} (inside If/Loop/Scan subgraphs; "
                              "only the top-level graph is inspected)") if inside else "",
    }
    return layers, summary
