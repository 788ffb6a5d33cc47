"""Multiply-accumulates (MACs) of a graph's weighted ops, and the share of them computed in INT8.

"Layers kept in float" counts layers, not compute: one 3x3 conv on a full-resolution map can cost more
than fifty 1x1 convs deeper in. This module weighs every ``Conv`` / ``ConvTranspose`` / ``Gemm`` /
``MatMul`` (:data:`~trtopt.onnx.ops.WEIGHTED_OPS`) by its MACs at given input shapes:

* ``Conv``: ``N*Cout*Hout*Wout * Cin/groups*kH*kW`` (output elements times weight ``dims[1:]``; any
  number of spatial dims, grouped and depthwise convs included);
* ``ConvTranspose``: ``N*Cin*Hin*Win * Cout/groups*kH*kW`` (input elements times weight ``dims[1:]``);
* ``Gemm``: ``M*K*N`` (``transA`` / ``transB`` honoured);
* ``MatMul``: output elements times the contracted dim ``K`` (batched and broadcast MatMuls included).

Rule for INT8: a node computes in INT8 when **both** its data inputs (input 0 and input 1: activation
and weight, or the two operands of a MatMul) come from a ``DequantizeLinear`` whose quantized input is
``INT8`` or ``UINT8``, looking through the layout ops TensorRT's Q/DQ fusion looks through
(:data:`~trtopt.onnx.ops.LAYOUT_OPS`). A MatMul with one operand in float is float; the bias is not a
data input. Nodes in If/Loop/Scan bodies count once (one iteration of a Loop, each If branch as if
taken: the share is per node, not a trace of one run).

Shapes come from ``onnx.shape_inference`` (with data propagation) after the graph inputs are fixed to
the given shapes; a node whose shapes inference cannot resolve is listed in
:attr:`MacShare.unshaped`, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from trtopt.onnx.graph import _skeleton, get_attr
from trtopt.onnx.ops import LAYOUT_OPS, WEIGHTED_OPS
from trtopt.onnx.walk import iter_graphs

#: Quantized element types that count as INT8.
INT8_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8})


@dataclass(frozen=True)
class NodeMacs:
    """One weighted node: its MACs at the given shapes and whether it computes in INT8.

    Attributes:
        name: ONNX node name (``op_type:output`` for an unnamed node).
        op_type: ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul``.
        macs: Multiply-accumulates for one call at the given input shapes.
        int8: Both data inputs come from INT8 ``DequantizeLinear`` (see the module rule).
        graph: Subgraph path (:func:`~trtopt.onnx.walk.iter_graphs`), ``""`` for the main graph.
        output: The node's first output.
    """

    name: str
    op_type: str
    macs: int
    int8: bool
    graph: str = ""
    output: str = ""


@dataclass(frozen=True)
class MacShare:
    """MACs of a graph's weighted ops and the share computed in INT8.

    Attributes:
        total_macs: MACs of every weighted node with resolved shapes.
        int8_macs: MACs of those in INT8.
        by_op: ``{op type: (total MACs, INT8 MACs)}``.
        nodes: Every weighted node with resolved shapes, in graph order.
        unshaped: Weighted nodes whose MACs shape inference could not resolve (left out of the totals).
        shapes: The input shapes the count was made at.
    """

    total_macs: int
    int8_macs: int
    by_op: dict[str, tuple[int, int]] = field(default_factory=dict)
    nodes: tuple[NodeMacs, ...] = ()
    unshaped: tuple[str, ...] = ()
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """``int8_macs / total_macs`` in [0, 1] (0 for a graph with no weighted MACs)."""
        return self.int8_macs / self.total_macs if self.total_macs else 0.0

    def top_float(self, k: int = 5) -> list[NodeMacs]:
        """The ``k`` float nodes with the most MACs, most first."""
        return sorted((n for n in self.nodes if not n.int8), key=lambda n: -n.macs)[:k]

    def to_json(self, top: int = 5) -> dict:
        """JSON form: totals, share, per-op breakdown and the ``top`` float nodes."""
        return {"total_macs": self.total_macs, "int8_macs": self.int8_macs, "share": round(self.share, 6),
                "by_op": {k: {"total_macs": t, "int8_macs": i} for k, (t, i) in self.by_op.items()},
                "top_float": [{"node": n.name, "op_type": n.op_type, "macs": n.macs} for n in self.top_float(top)],
                "unshaped": list(self.unshaped), "shapes": {k: list(v) for k, v in self.shapes.items()}}

    def line(self) -> str:
        """One line: ``"INT8 MACs: 97.1% of 2.31 GMAC (Conv 98.0%, MatMul 12.5%)"``."""
        ops = ", ".join(f"{op} {100 * i / t:.1f}%" for op, (t, i) in self.by_op.items() if t)
        miss = f"; {len(self.unshaped)} node(s) without shapes left out" if self.unshaped else ""
        return f"INT8 MACs: {100 * self.share:.1f}% of {format_macs(self.total_macs)} ({ops}){miss}"


def format_macs(macs: int) -> str:
    """``1234567 -> "1.23 MMAC"`` (k / M / G / T, three significant digits)."""
    for unit, div in (("TMAC", 1e12), ("GMAC", 1e9), ("MMAC", 1e6), ("kMAC", 1e3)):
        if macs >= div:
            return f"{macs / div:.3g} {unit}"
    return f"{macs} MAC"


#: Ops evaluated on known values to fold shape computations (``Shape -> Slice -> Concat -> Reshape``).
_FOLD_OPS = frozenset({"Shape", "Slice", "Gather", "Concat", "Unsqueeze", "Squeeze", "Cast", "Add", "Sub", "Mul",
                       "Div", "Identity", "Constant", "ReduceProd", "Equal", "Where", "Floor", "Ceil", "Max", "Min"})


#: Rounds of folding and re-inference at most (a transformer needs about two per attention block).
_MAX_FOLD_ROUNDS = 64


def _fold_shapes(model: onnx.ModelProto) -> bool:
    """Replace shape computations of the main graph whose value is known by ``Constant`` nodes, in place.

    ``onnx.shape_inference``'s data propagation stops at some chains (a Paddle ``Shape -> Slice ->
    Concat -> Reshape`` leaves the Reshape output unknown); with the input shapes fixed, ``Shape`` of a
    fully known tensor is a constant, and the small integer ops after it are evaluated with ONNX's
    reference evaluator (exact op semantics). Returns whether a node was replaced.
    """
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    dims, _ = _types(model)
    vals: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= 64 and t.data_location != onnx.TensorProto.EXTERNAL:
            vals[t.name] = onnx.numpy_helper.to_array(t)
    replace: dict[int, onnx.NodeProto] = {}
    for k, n in enumerate(g.node):
        if n.op_type not in _FOLD_OPS or not n.output:
            continue
        if n.op_type == "Shape":
            d = dims.get(n.input[0])
            if d is None or any(v is None for v in d):
                continue
            out = np.array(d, dtype=np.int64)[get_attr(n, "start", 0):get_attr(n, "end", None)]
        elif n.op_type == "Constant":
            v = get_attr(n, "value")
            if isinstance(v, onnx.TensorProto) and int(np.prod(v.dims, dtype=np.int64)) <= 64:
                vals[n.output[0]] = onnx.numpy_helper.to_array(v)
            continue
        elif all(i in vals for i in n.input if i):
            try:
                out = np.asarray(ReferenceEvaluator(n, opsets={"": opset}).run(
                    None, {i: vals[i] for i in n.input if i})[0])
            except Exception:  # an op the reference evaluator refuses here: leave it to shape inference
                continue
        else:
            continue
        if out.size > 64:
            continue
        vals[n.output[0]] = out
        replace[k] = onnx.helper.make_node("Constant", [], [n.output[0]], name=n.name,
                                           value=onnx.numpy_helper.from_array(out, n.output[0]))
    for k, c in replace.items():
        g.node[k].CopyFrom(c)
    return bool(replace)


def _shaped(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """Shape-inferred weight-less copy of ``model`` with its graph inputs fixed to ``shapes``."""
    sk = _skeleton(model)
    del sk.graph.value_info[:]  # declared dims may be symbolic; inference at fixed shapes fills them again
    for vi in sk.graph.input:
        if vi.name in shapes:
            shp = vi.type.tensor_type.shape
            del shp.dim[:]
            for d in shapes[vi.name]:
                shp.dim.add().dim_value = int(d)
    inferred = onnx.shape_inference.infer_shapes(sk, data_prop=True)
    for _ in range(_MAX_FOLD_ROUNDS):  # each round sizes one more level of shape-dependent Reshapes
        if not _fold_shapes(inferred):
            break
        del inferred.graph.value_info[:]
        inferred = onnx.shape_inference.infer_shapes(inferred, data_prop=True)
    return inferred


def _types(model: onnx.ModelProto) -> tuple[dict[str, tuple[int | None, ...]], dict[str, int]]:
    """``({tensor: dims (None where unknown)}, {tensor: elem type})`` over every graph of ``model``."""
    dims: dict[str, tuple[int | None, ...]] = {}
    elem: dict[str, int] = {}
    for _, g in iter_graphs(model.graph):
        for t in g.initializer:
            dims[t.name], elem[t.name] = tuple(int(d) for d in t.dims), t.data_type
        for vi in (*g.input, *g.output, *g.value_info):
            tt = vi.type.tensor_type
            if tt.elem_type:
                elem.setdefault(vi.name, tt.elem_type)
            if tt.HasField("shape"):
                dims.setdefault(vi.name, tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                                               else None for d in tt.shape.dim))
        for n in g.node:
            if n.op_type == "Constant" and n.output:
                v = get_attr(n, "value")
                if isinstance(v, onnx.TensorProto):
                    dims[n.output[0]], elem[n.output[0]] = tuple(int(d) for d in v.dims), v.data_type
    return dims, elem


def _count(node: onnx.NodeProto, dims: Mapping[str, tuple[int | None, ...]]) -> int | None:
    """MACs of one weighted node (see the module docstring), ``None`` when a needed dim is unknown."""
    def full(name: str) -> tuple[int, ...] | None:
        d = dims.get(name)
        return None if d is None or any(v is None for v in d) else d  # type: ignore[return-value]

    op = node.op_type
    if len(node.input) < 2:
        return None
    a, b = full(node.input[0]), full(node.input[1])
    out = full(node.output[0]) if node.output else None
    if op == "Conv" and out is not None and b is not None:
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(b[1:], dtype=np.int64))
    if op == "ConvTranspose" and a is not None and b is not None:
        return int(np.prod(a, dtype=np.int64)) * int(np.prod(b[1:], dtype=np.int64))
    if op == "Gemm" and a is not None and b is not None and len(a) == 2 and len(b) == 2:
        m, k = (a[1], a[0]) if get_attr(node, "transA", 0) else a
        n = b[0] if get_attr(node, "transB", 0) else b[1]
        return int(m) * int(k) * int(n)
    if op == "MatMul" and a is not None and out is not None and a:
        return int(np.prod(out, dtype=np.int64)) * int(a[-1])
    return None


def _from_int8_dq(graph: onnx.GraphProto, tensor: str, elem: Mapping[str, int],
                  producers: Mapping[str, onnx.NodeProto]) -> bool:
    """True when ``tensor`` is an INT8 ``DequantizeLinear`` output, looking through :data:`LAYOUT_OPS`."""
    node = producers.get(tensor)
    for _ in range(16):
        if node is None:
            return False
        if node.op_type == "DequantizeLinear":
            return elem.get(node.input[0]) in INT8_TYPES
        if node.op_type not in LAYOUT_OPS or not node.input:
            return False
        node = producers.get(node.input[0])
    return False


def mac_share(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> MacShare:
    """Count the MACs of ``model``'s weighted ops at ``shapes`` and the share computed in INT8.

    Args:
        model: An ONNX model (weights may be external or absent: only their dims are read).
        shapes: ``{graph input: shape}`` with every dim fixed (e.g. an optimization profile's opt
            shapes, :func:`trtopt.inputs.opt_shapes`); inputs not named keep their declared dims.

    Returns:
        A :class:`MacShare`; nodes whose shapes stay unknown are in ``unshaped``.

    Raises:
        onnx.shape_inference.InferenceError: The graph is inconsistent with ``shapes``.
    """
    inferred = _shaped(model, shapes)
    dims, elem = _types(inferred)
    nodes: list[NodeMacs] = []
    unshaped: list[str] = []
    for path, g in iter_graphs(inferred.graph):
        producers = {o: n for n in g.node for o in n.output}
        for n in g.node:
            if n.op_type not in WEIGHTED_OPS:
                continue
            name = n.name or f"{n.op_type}:{n.output[0] if n.output else ''}"
            macs = _count(n, dims)
            if macs is None:
                unshaped.append(name)
                continue
            int8 = len(n.input) >= 2 and all(_from_int8_dq(g, t, elem, producers) for t in n.input[:2])
            nodes.append(NodeMacs(name, n.op_type, macs, int8, path, n.output[0] if n.output else ""))
    by_op: dict[str, tuple[int, int]] = {}
    for nm in nodes:
        t, i = by_op.get(nm.op_type, (0, 0))
        by_op[nm.op_type] = (t + nm.macs, i + (nm.macs if nm.int8 else 0))
    return MacShare(total_macs=sum(n.macs for n in nodes), int8_macs=sum(n.macs for n in nodes if n.int8),
                    by_op=dict(sorted(by_op.items())), nodes=tuple(nodes), unshaped=tuple(unshaped),
                    shapes={k: tuple(int(d) for d in v) for k, v in shapes.items()})
