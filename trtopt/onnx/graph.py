"""Facts about one graph level, computed once: producers, consumers, constants, types, opset, names.

:class:`GraphIndex` holds the maps a pass over many nodes needs (which node produces a tensor,
which nodes read it, which names are constants and their tensors), built in one scan of the graph
instead of one scan per lookup. The module-level functions answer the same questions for a single
lookup. Every answer is about one graph level: subgraphs are walked with :mod:`trtopt.onnx.walk`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.onnx.io import load_onnx
from trtopt.onnx.ops import VALUE_PRESERVING_OPS
from trtopt.onnx.walk import iter_graphs


class GraphIndex:
    """Producers, consumers and constants of one graph level, from one scan of ``graph``.

    Build it after the last change to the graph: it is a snapshot and does not follow edits.

    Attributes:
        graph: The indexed graph.
        producers: Tensor name -> the node producing it.
        consumers: Tensor name -> the nodes reading it (node order; a node reading a tensor twice is
            listed twice).
        constants: Names of the initializers and ``Constant`` node outputs.
        elem_types: ONNX element type of every tensor whose type the graph states: graph inputs,
            outputs and ``value_info`` first, then initializers and ``Constant`` ``value`` tensors
            (no shape inference; :func:`float_tensor_types` infers the rest).
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.constants: set[str] = set()
        self._tensors: dict[str, onnx.TensorProto] = {}
        self.elem_types: dict[str, int] = {v.name: v.type.tensor_type.elem_type
                                           for v in (*graph.input, *graph.output, *graph.value_info)
                                           if v.type.tensor_type.elem_type}
        for t in graph.initializer:
            self.constants.add(t.name)
            self._tensors.setdefault(t.name, t)
        for n in graph.node:
            for o in n.output:
                if o:
                    self.producers[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
            if n.op_type == "Constant" and n.output:
                self.constants.add(n.output[0])
                value = next((a.t for a in n.attribute if a.name == "value"), None)
                if value is not None:
                    self._tensors.setdefault(n.output[0], value)
        for name, t in self._tensors.items():
            self.elem_types.setdefault(name, t.data_type)

    def array(self, name: str) -> np.ndarray | None:
        """An initializer (or ``Constant`` node ``value``) as a new numpy array, or ``None``.

        An initializer wins over a ``Constant`` node of the same name, as in :func:`initializer_array`.
        """
        t = self._tensors.get(name)
        return None if t is None else numpy_helper.to_array(t)

def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Map initializer name to tensor proto."""
    return {t.name: t for t in graph.initializer}

def initializer_array(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """Return an initializer (or Constant node output) as a numpy array, or ``None``.

    One scan of the graph per call: build a :class:`GraphIndex` for many lookups.
    """
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

def get_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Return a node attribute's Python value, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default

def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's initializers and ``Constant`` node outputs (this graph level only)."""
    names = {t.name for t in graph.initializer}
    names.update(n.output[0] for n in graph.node if n.op_type == "Constant" and n.output)
    return names

def opset_of(model: onnx.ModelProto) -> int:
    """Default-domain (``ai.onnx``) opset version of ``model`` (0 when absent)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

def as_model(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """Load a path (with clear errors) or pass a ModelProto through."""
    return model if isinstance(model, onnx.ModelProto) else load_onnx(model)

def _skeleton(model: onnx.ModelProto, max_elems: int = 4096) -> onnx.ModelProto:
    """The model with large initializers turned into typed graph inputs (no weight bytes).

    Type inference needs the weights' types and shapes, never their values (only small integer
    constants such as Reshape targets matter, and those stay), so inferring on the skeleton
    gives the same element types without serializing and re-parsing hundreds of MB of weights.
    """
    sk = onnx.ModelProto()
    for f in ("ir_version", "opset_import", "domain", "producer_name"):
        if f == "opset_import":
            sk.opset_import.extend(model.opset_import)
        elif model.HasField(f):
            setattr(sk, f, getattr(model, f))
    g, src = sk.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    declared = {i.name for i in src.input}
    for t in src.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= max_elems or t.data_location == onnx.TensorProto.EXTERNAL:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return sk

def float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Elem type of every typed tensor (after shape inference, best effort)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model))
    except Exception:
        inferred = model
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)}

def source_producer(graph: onnx.GraphProto, tensor: str, through: frozenset[str] = VALUE_PRESERVING_OPS,
                    where_max: float | None = None) -> onnx.NodeProto | None:
    """The node that computed the values of ``tensor``, looking through ``through`` ops (input 0).

    Args:
        graph: Graph holding ``tensor``.
        tensor: Tensor name.
        through: Op types to look through (default :data:`VALUE_PRESERVING_OPS`).
        where_max: Also look through ``Where(cond, a, b)`` when one branch is a constant (initializer
            or ``Constant`` node) whose values all have ``|v| <= where_max`` (e.g. the
            ``Where(IsNaN(p), 0, p)`` exporters put after an attention Softmax).

    Returns:
        The first producer that is not looked through, or ``None`` for a graph input / constant.
    """
    index = GraphIndex(graph)
    prod = index.producers
    seen: set[str] = set()
    node = prod.get(tensor)
    while node is not None and node.input:
        nxt = None
        if node.op_type in through:
            nxt = node.input[0]
        elif node.op_type == "Where" and where_max is not None and len(node.input) == 3:
            for const, other in ((1, 2), (2, 1)):
                v = index.array(node.input[const])
                if v is not None and v.size and np.issubdtype(v.dtype, np.number) and \
                        float(np.abs(v).max()) <= where_max and index.array(node.input[other]) is None:
                    nxt = node.input[other]
                    break
        if nxt is None or nxt in seen:
            break
        seen.add(nxt)
        node = prod.get(nxt)
    return node

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
    """Generate tensor/node names unique within a graph and all its subgraphs (no shadowing either way)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used: set[str] = set()
        for _, g in iter_graphs(graph):
            self.used.update(t.name for t in g.initializer)
            self.used.update(v.name for v in list(g.input) + list(g.output) + list(g.value_info))
            for n in g.node:
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
