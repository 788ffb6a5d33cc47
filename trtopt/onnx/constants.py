"""Every form of constant in a model, and constant-only chains that compute a weight.

A constant is an initializer, a sparse initializer or a ``Constant`` node (``value``,
``value_float(s)``, ``value_int(s)``, ``value_string(s)``, ``sparse_value``), in the top graph or in
any If/Loop/Scan body. Exporters also compute weights from constants (``W -> Transpose -> Cast ->
MatMul``): :func:`constant_chain` finds such chains and :func:`evaluate_chain` computes their value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.onnx.graph import GraphIndex, constant_names, producers
from trtopt.onnx.ops import CONST_LOOK_THROUGH, FLOAT_TYPES
from trtopt.onnx.walk import iter_graphs


class ConstantRef:
    """One constant tensor of a model, found by :func:`iter_constants`.

    Attributes:
        graph_path: Path of the graph holding it (``""`` = top level; see :func:`iter_graphs`).
        name: Tensor name (initializer name or the Constant node's output).
        kind: ``initializer``, ``sparse_initializer`` or the Constant attribute (``value``,
            ``value_float``, ``value_floats``, ``value_int(s)``, ``sparse_value``, ``value_string(s)``).
        node: The ``Constant`` node, or ``None`` for initializers.
        data_type: ONNX element type (``TensorProto.FLOAT``...).
    """

    __slots__ = ("_array", "_proto", "data_type", "graph_path", "kind", "name", "node")

    def __init__(self, graph_path: str, name: str, kind: str, node: onnx.NodeProto | None, data_type: int,
                 proto: Any) -> None:
        self.graph_path, self.name, self.kind, self.node, self.data_type = graph_path, name, kind, node, data_type
        self._proto, self._array = proto, None

    @property
    def array(self) -> np.ndarray:
        """The value as a numpy array (decoded on first access; sparse values are densified)."""
        if self._array is None:
            p, k = self._proto, self.kind
            if k in ("initializer", "value"):
                self._array = numpy_helper.to_array(p)
            elif k in ("sparse_initializer", "sparse_value"):
                self._array = _dense(p)
            elif k == "value_float":
                self._array = np.array(p, np.float32)
            elif k == "value_floats":
                self._array = np.array(list(p), np.float32)
            elif k == "value_int":
                self._array = np.array(p, np.int64)
            elif k == "value_ints":
                self._array = np.array(list(p), np.int64)
            else:
                self._array = np.array(p, object)
        return self._array

    def release(self) -> None:
        """Drop the decoded array (decoded again on the next :attr:`array`): for multi-GB weights read once."""
        self._array = None

    @property
    def is_float(self) -> bool:
        """Float element type (float32/16, bfloat16, double)."""
        return self.data_type in FLOAT_TYPES

    def __repr__(self) -> str:
        return f"ConstantRef({self.graph_path!r}, {self.name!r}, {self.kind})"

def _dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    vals = numpy_helper.to_array(sp.values)
    idx = numpy_helper.to_array(sp.indices)
    out = np.zeros(int(np.prod(sp.dims, dtype=np.int64)), vals.dtype)
    if idx.ndim == 2:  # [NNZ, rank] coordinates
        idx = np.ravel_multi_index(tuple(idx.T), tuple(sp.dims))
    out[idx.reshape(-1)] = vals.reshape(-1)
    return out.reshape(tuple(sp.dims))

_CONST_ATTR_TYPES = {"value_float": onnx.TensorProto.FLOAT, "value_floats": onnx.TensorProto.FLOAT,
                     "value_int": onnx.TensorProto.INT64, "value_ints": onnx.TensorProto.INT64,
                     "value_string": onnx.TensorProto.STRING, "value_strings": onnx.TensorProto.STRING}

def iter_constants(model: onnx.ModelProto | onnx.GraphProto) -> Iterator[ConstantRef]:
    """Yield a :class:`ConstantRef` for every constant of the model, subgraphs included.

    Covers initializers, sparse initializers and ``Constant`` nodes in all their forms
    (``value``, ``value_float(s)``, ``value_int(s)``, ``value_string(s)``, ``sparse_value``),
    in the top graph and every If/Loop/Scan body. Arrays are decoded lazily (``.array``).
    """
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    for path, g in iter_graphs(graph):
        for t in g.initializer:
            yield ConstantRef(path, t.name, "initializer", None, t.data_type, t)
        for sp in g.sparse_initializer:
            yield ConstantRef(path, sp.values.name, "sparse_initializer", None, sp.values.data_type, sp)
        for n in g.node:
            if n.op_type != "Constant" or not n.output or not n.attribute:
                continue
            a = n.attribute[0]
            kind = a.name
            if kind == "value":
                yield ConstantRef(path, n.output[0], kind, n, a.t.data_type, a.t)
            elif kind == "sparse_value":
                yield ConstantRef(path, n.output[0], kind, n, a.sparse_tensor.values.data_type, a.sparse_tensor)
            elif kind in _CONST_ATTR_TYPES:
                yield ConstantRef(path, n.output[0], kind, n, _CONST_ATTR_TYPES[kind],
                                  onnx.helper.get_attribute_value(a))

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
        consts = constant_names(graph)
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
    index = GraphIndex(graph)

    def value(t: str) -> np.ndarray:
        if t not in values:
            arr = index.array(t)
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
