"""Small ONNX graph helpers shared by export, calibration, Q/DQ, FP16 and inspection.

This is the one place that knows protobuf details: loading with clear errors, producer
and consumer maps, initializer lookup, unique names and atomic saving.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.errors import InputError
from trtopt.fileio import atomic_path


def load_onnx(path: str | os.PathLike[str], check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model, raising one clear :class:`InputError` if it is missing or corrupt.

    Args:
        path: ``.onnx`` file.
        check: Run ``onnx.checker`` on the loaded model.

    Returns:
        The model proto.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise InputError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise InputError(f"{p} is not a valid ONNX model (empty graph)")
    if check:
        try:
            # the checker reads the file itself: 3x faster than re-serializing the loaded proto
            onnx.checker.check_model(str(p))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{p} failed the ONNX checker: {first}") from exc
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` atomically (temp file + rename).

    Args:
        model: Model to save.
        path: Destination ``.onnx`` path.

    Returns:
        The destination path.
    """
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Map initializer name to tensor proto."""
    return {t.name: t for t in graph.initializer}


def initializer_array(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """Return an initializer (or Constant node output) as a numpy array, or ``None``."""
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Map tensor name to the node producing it."""
    return {o: n for n in graph.node for o in n.output if o}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Map tensor name to the nodes consuming it."""
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            if i:
                out[i].append(n)
    return out


def get_attr(node: onnx.NodeProto, name: str, default=None):
    """Return a node attribute's Python value, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """Return the real graph inputs (excluding initializers listed as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def module_name(node_name: str) -> str | None:
    """Map an exported ONNX node name to the PyTorch module path it came from.

    Args:
        node_name: e.g. ``/features/0/Conv`` or ``/layer1/layer1.0/conv1/Conv``.

    Returns:
        ``features.0`` / ``layer1.0.conv1``; ``None`` when the name carries no scope.
    """
    parts = [p for p in node_name.split("/") if p]
    if not node_name.startswith("/") or len(parts) < 2:
        return None
    name = ""
    for seg in parts[:-1]:  # the last part is the op (Conv, Gemm_1, ...)
        # the legacy exporter repeats the parent path in nested scopes: layer1 -> layer1.0
        name = seg if name and seg.startswith(name + ".") else (f"{name}.{seg}" if name else seg)
    return name or None


class NameGen:
    """Generate tensor/node names unique within a graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {t.name for t in graph.initializer}
        self.used.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
        for n in graph.node:
            self.used.update(n.output)
            self.used.update(n.input)
            self.used.add(n.name)

    def __call__(self, base: str) -> str:
        """Return ``base`` or ``base_<k>``, whichever is unused, and reserve it."""
        name, k = base, 1
        while name in self.used:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name


# ---------------------------------------------------------------------------------------------
# Subgraph walking (If / Loop / Scan bodies) and constant tracing.
# Added for issue 11 (quantization preparation, control-flow reports); generic on purpose.
# ---------------------------------------------------------------------------------------------

#: Ops whose cost dominates a network (what calibration, Q/DQ and 2:4 sparsity act on).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def iter_graphs(graph: onnx.GraphProto, path: str = ""):
    """Yield ``(path, graph)`` for ``graph`` and, recursively, every subgraph attribute in it.

    The top-level graph has path ``""``; a subgraph's path names the node and attribute that hold
    it, joined by ``/``: ``"If_0.then_branch"``, ``"loop.body/inner_if.else_branch"``. Covers every
    GRAPH / GRAPHS attribute (If ``then_branch``/``else_branch``, Loop and Scan ``body``, and any
    custom op with graph attributes), depth first in node order.

    Args:
        graph: Graph to walk.
        path: Prefix for the yielded paths (used by the recursion).

    Yields:
        ``(path, GraphProto)`` pairs, the given graph first.
    """
    yield path, graph
    for node in graph.node:
        label = node.name or (node.output[0] if node.output else node.op_type)
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) \
                if a.type == onnx.AttributeProto.GRAPHS else []
            for k, sub in enumerate(subs):
                name = f"{label}.{a.name}" if len(subs) == 1 else f"{label}.{a.name}[{k}]"
                yield from iter_graphs(sub, f"{path}/{name}" if path else name)


def iter_nodes(graph: onnx.GraphProto):
    """Yield ``(path, node)`` for every node of ``graph`` and of all its subgraphs (see :func:`iter_graphs`)."""
    for path, g in iter_graphs(graph):
        for node in g.node:
            yield path, node


def subgraph_op_counts(graph: onnx.GraphProto, op_types: tuple[str, ...] = WEIGHTED_OPS) -> dict[str, dict[str, int]]:
    """Count ``op_types`` inside control-flow subgraphs only (the top-level graph is left out).

    Returns:
        ``{subgraph path: {op type: count}}`` for the subgraphs that hold at least one of ``op_types``
        (own nodes only: nested subgraphs get their own entry), in walk order.
    """
    out: dict[str, dict[str, int]] = {}
    for path, g in iter_graphs(graph):
        if not path:
            continue
        counts: dict[str, int] = {}
        for n in g.node:
            if n.op_type in op_types:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
        if counts:
            out[path] = counts
    return out


def describe_subgraph_ops(counts: dict[str, dict[str, int]], limit: int = 3) -> str:
    """One-line summary of :func:`subgraph_op_counts`: ``"12 Conv in 'If_0.then_branch', 2 MatMul in ..."``."""
    parts = [", ".join(f"{c} {op}" for op, c in ops.items()) + f" in '{p}'" for p, ops in list(counts.items())[:limit]]
    more = len(counts) - limit
    return "; ".join(parts) + (f"; and {more} more subgraph(s)" if more > 0 else "")


#: Single-input (apart from constant shape/axes operands) ops a constant can be traced through.
CONST_LOOK_THROUGH = ("Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def constant_chain(graph: onnx.GraphProto, name: str, max_depth: int = 8, *, consts: set[str] | None = None,
                   prod: dict[str, onnx.NodeProto] | None = None) -> list[onnx.NodeProto] | None:
    """Nodes (source first) that compute ``name`` from constants only through :data:`CONST_LOOK_THROUGH` ops.

    ``W -> Transpose -> Cast -> MatMul`` returns ``[Transpose, Cast]`` for the Cast's output. Every
    input of every node in the chain must be an initializer or a ``Constant`` node output (Reshape's
    shape, Squeeze's axes, ...). Top-level tensors of ``graph`` only.

    Args:
        graph: Graph holding ``name``.
        name: Tensor to trace.
        max_depth: Longest chain followed.
        consts: Precomputed constant names (initializers + Constant outputs) when tracing many tensors.
        prod: Precomputed :func:`producers` map, likewise.

    Returns:
        The chain (empty when ``name`` itself is a constant), or ``None`` when ``name`` is not computed
        from constants this way.
    """
    if consts is None:
        consts = {t.name for t in graph.initializer}
        consts.update(n.output[0] for n in graph.node if n.op_type == "Constant" and n.output)
    prod = producers(graph) if prod is None else prod
    chain: list[onnx.NodeProto] = []
    t = name
    while t not in consts:
        node = prod.get(t)
        if node is None or node.op_type not in CONST_LOOK_THROUGH or len(chain) >= max_depth:
            return None
        if any(i and i not in consts for i in node.input[1:]):
            return None
        chain.insert(0, node)
        t = node.input[0]
    return chain


def evaluate_chain(graph: onnx.GraphProto, chain: list[onnx.NodeProto], opset: int) -> np.ndarray:
    """Value of the last output of a :func:`constant_chain` (ONNX reference evaluator, exact op semantics)."""
    from onnx.reference import ReferenceEvaluator

    values: dict[str, np.ndarray] = {}

    def value(t: str) -> np.ndarray:
        if t not in values:
            arr = initializer_array(graph, t)
            if arr is None:
                raise KeyError(t)
            values[t] = arr
        return values[t]

    out = None
    for node in chain:
        feeds = {i: value(i) for i in node.input if i}
        ev = ReferenceEvaluator(node, opsets={"": opset})
        out = ev.run(None, feeds)[0]
        values[node.output[0]] = out
    if out is None:
        raise ValueError("empty chain")
    return np.asarray(out)
# --- graph walking shared by every stage (subgraphs, Constant nodes, external data, dynamic dims) -----------


def dim_is_dynamic(dim: onnx.TensorShapeProto.Dimension) -> bool:
    """True for a named dim, an unset dim, or a ``dim_value`` of ``-1``/``0`` (exporters write both)."""
    return not (dim.HasField("dim_value") and dim.dim_value > 0)


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's initializers and ``Constant`` node outputs (this graph level only)."""
    names = {t.name for t in graph.initializer}
    names.update(n.output[0] for n in graph.node if n.op_type == "Constant" and n.output)
    return names


class ConstantRef:
    """One constant of a model: an initializer or a ``Constant`` node's value, in any (sub)graph.

    Attributes:
        graph_path: Path of the graph holding it (see :func:`iter_graphs`).
        name: Tensor name.
        from_node: The ``Constant`` node, or ``None`` for an initializer.
        tensor: The TensorProto (``None`` for ``value_float(s)``/``value_int(s)`` attributes).
    """

    def __init__(self, graph_path: str, name: str, from_node: onnx.NodeProto | None,
                 tensor: onnx.TensorProto | None, value=None, base_dir: str | None = None) -> None:
        self.graph_path, self.name, self.from_node, self.tensor = graph_path, name, from_node, tensor
        self._value, self._base_dir = value, base_dir

    @property
    def array(self) -> np.ndarray | None:
        """The value as numpy (external data read from ``base_dir``); ``None`` if unreadable."""
        if self._value is not None:
            return np.asarray(self._value)
        if self.tensor is None:
            return None
        try:
            return numpy_helper.to_array(self.tensor, base_dir=self._base_dir or "")
        except Exception:
            return None


def iter_constants(model: onnx.ModelProto, base_dir: str | os.PathLike[str] | None = None):
    """Yield a :class:`ConstantRef` for every initializer and ``Constant`` node, subgraphs included."""
    bd = None if base_dir is None else str(base_dir)
    for path, g in iter_graphs(model.graph):
        for t in g.initializer:
            yield ConstantRef(path, t.name, None, t, base_dir=bd)
        for n in g.node:
            if n.op_type != "Constant" or not n.output:
                continue
            for a in n.attribute:
                if a.name == "value":
                    yield ConstantRef(path, n.output[0], n, a.t, base_dir=bd)
                elif a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                    yield ConstantRef(path, n.output[0], n, None, value=onnx.helper.get_attribute_value(a))
