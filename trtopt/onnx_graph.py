"""Small ONNX graph helpers shared by export, calibration, Q/DQ, FP16 and inspection.

This is the one place that knows protobuf details: loading with clear errors, producer
and consumer maps, initializer lookup, unique names, atomic verified saving (file-level work in
:mod:`trtopt.onnx_io`: full checker + ONNX Runtime load, external data above 2 GB, model hash),
and walking subgraphs (If/Loop/Scan) and every form of constant.
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
from trtopt.onnx_io import (  # noqa: F401  (re-exported: the file-level helpers live in onnx_io)
    PROTO_LIMIT_BYTES,
    first_error_line,
    fits_protobuf,
    load_external_tensors,
    model_hash,
    save_with_external_data,
    uses_external_data,
    verify_onnx_file,
)


def load_graph_only(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load a model's graph without the bytes of external-data tensors, with one clear error per fault.

    Every stage reads a model through here first (data checks, output names, the doctor), so an
    empty file or a graph without nodes gets the same message in every command.

    Raises:
        InputError: ``path`` is a directory, missing, not an ONNX model, or a graph without nodes.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an ONNX model file")
    if not p.is_file():
        raise InputError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise InputError(f"{p} is not a valid ONNX model (empty graph)")
    return model


def load_onnx(path: str | os.PathLike[str], check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model, raising one clear :class:`InputError` if it is missing or corrupt.

    External data (models over 2 GB, or saved with ``save_as_external_data``) is read from the
    model's own folder, where ONNX stores it relative to the ``.onnx`` file.

    Args:
        path: ``.onnx`` file.
        check: Run ``onnx.checker`` on the loaded model (by path, so external data is checked too).

    Returns:
        The model proto, with external tensors loaded into memory.
    """
    p = Path(path)
    model = load_graph_only(p)
    if uses_external_data(model):
        try:
            load_external_tensors(model, p.parent.resolve())
        except Exception as exc:
            raise InputError(f"{p}: cannot read its external data (expected beside the model): "
                             f"{first_error_line(exc)}") from exc
    if check:
        try:
            # the checker reads the file itself: 3x faster than re-serializing the loaded proto
            onnx.checker.check_model(str(p))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{p} failed the ONNX checker: {first}") from exc
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str], *, check: bool = True, ort_load: bool = True,
              external_data: bool | None = None) -> Path:
    """Save ``model`` atomically, verified: nothing is left at ``path`` unless the file is valid.

    The model is written to a temporary file beside ``path``; that file must pass
    ``onnx.checker`` with ``full_check`` (strict shape inference) and load in an ONNX Runtime
    CPU session opened *by path* (so external data is exercised exactly as a user would) before
    it is renamed onto ``path``. Models whose protobuf would exceed 2 GB are written with their
    tensors in ``<path name>.data`` beside the ``.onnx`` (onnx's external-data format).

    Args:
        model: Model to save. Not modified (tensors moved to external data are read back).
        path: Destination ``.onnx`` path.
        check: Run the full ONNX checker (skip only for a model the caller just checked).
        ort_load: Open the file in ONNX Runtime. Skip only for graphs ONNX Runtime cannot hold by
            design (custom-domain plugin ops meant for TensorRT); say why at the call site.
        external_data: Force (``True``) or forbid (``False``) external data; ``None`` chooses it when
            the serialized model would exceed protobuf's 2 GB limit.

    Returns:
        The destination path.

    Raises:
        InputError: The destination cannot be written.
        TrtoptError: The written model fails the checker or ONNX Runtime refuses it (a trtopt bug or
            an unsupported input model); the message names the file and the first error line.
    """
    dest = Path(path)
    if external_data is None:
        external_data = not fits_protobuf(model)
    if not external_data:
        with atomic_path(dest) as tmp:
            onnx.save(model, str(tmp))
            verify_onnx_file(tmp, check=check, ort_load=ort_load, label=str(dest),
                             domains={o.domain for o in model.opset_import})
        return dest
    return save_with_external_data(model, dest, check=check, ort_load=ort_load)


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


# ---------------------------------------------------------------------------------------------
# Subgraph walking (If / Loop / Scan bodies) and constant tracing.
# Used by quantization preparation and control-flow reports; generic on purpose.
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


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's initializers and ``Constant`` node outputs (this graph level only)."""
    names = {t.name for t in graph.initializer}
    names.update(n.output[0] for n in graph.node if n.op_type == "Constant" and n.output)
    return names


# ---------------------------------------------------------------------------------------------
# Subgraphs and constants.
#
# If/Loop/Scan bodies are GraphProtos in node attributes. They may read any tensor of an
# enclosing graph by name (outer-scope references) without listing it as a node input, so
# "which tensors are used" must look inside them, and constants live in them too.
# ---------------------------------------------------------------------------------------------

_GRAPH_ATTR_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def node_subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """``(attribute name, graph)`` of every subgraph attribute of ``node`` (If branches, Loop/Scan bodies)."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend((f"{a.name}[{k}]", g) for k, g in enumerate(a.graphs))
    return out


def outer_scope_inputs(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs read from enclosing graphs (implicit inputs), in first-use order.

    A name is outer-scope when no enclosing level inside the node defines it (subgraph inputs,
    initializers, node outputs). Empty for nodes without subgraphs.
    """
    found: dict[str, None] = {}

    def walk(g: onnx.GraphProto, defined: set[str]) -> None:
        local = defined | {i.name for i in g.input} | {t.name for t in g.initializer}
        local |= {t.values.name for t in g.sparse_initializer}
        for n in g.node:
            for i in n.input:
                if i and i not in local:
                    found[i] = None
            for _, sub in node_subgraphs(n):
                walk(sub, local)
            local |= set(n.output)
        for o in g.output:
            if o.name not in local:
                found[o.name] = None

    for _, sub in node_subgraphs(node):
        walk(sub, set())
    return list(found)


def used_tensor_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name ``graph``'s nodes read, including names read only inside their subgraphs, plus outputs."""
    used = {o.name for o in graph.output}
    for n in graph.node:
        used.update(i for i in n.input if i)
        used.update(outer_scope_inputs(n))
    return used


def drop_unused_initializers(graph: onnx.GraphProto, candidates: set[str] | None = None) -> int:
    """Remove initializers of ``graph`` that nothing reads (subgraph uses count). Returns how many went.

    Args:
        graph: Top-level (or any) graph, modified in place.
        candidates: Only these names may be removed (all when ``None``).
    """
    used = used_tensor_names(graph)
    keep = [t for t in graph.initializer if t.name in used or (candidates is not None and t.name not in candidates)]
    dropped = len(graph.initializer) - len(keep)
    if dropped:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return dropped


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
                 proto) -> None:
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

    @property
    def is_float(self) -> bool:
        """Float element type (float32/16, bfloat16, double)."""
        return self.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                                  onnx.TensorProto.BFLOAT16)

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


def iter_constants(model: onnx.ModelProto | onnx.GraphProto):
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


def model_computes_fp16(model: onnx.ModelProto) -> bool:
    """True when some computation of the model is typed float16, wherever its weights live.

    Looks at graph inputs/outputs/value_info, constants of every kind (initializers and
    ``Constant`` nodes, subgraphs included) and ``Cast(to=FLOAT16)`` nodes in any graph: an FP16
    model whose weights are ``Constant`` nodes (Paddle exports) has no FP16 initializer at all.
    """
    f16 = onnx.TensorProto.FLOAT16
    for _, g in iter_graphs(model.graph):
        if any(v.type.tensor_type.elem_type == f16 for v in (*g.input, *g.output, *g.value_info)):
            return True
        if any(n.op_type == "Cast" and get_attr(n, "to") == f16 for n in g.node):
            return True
    return any(c.data_type == f16 for c in iter_constants(model))


# -- compute nodes and their quantization (TensorRT build report; owner: tensorrt backend) ----------------
#: Ops TensorRT can run in INT8 when both inputs come from DequantizeLinear.
COMPUTE_OPS = WEIGHTED_OPS
#: Layout-only ops TensorRT's Q/DQ fusion looks through between a DequantizeLinear and its consumer.
_LAYOUT_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


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
            if n.op_type not in _LAYOUT_OPS or not n.input:
                return False
            name, seen = n.input[0], seen + 1
        return False

    return [(n, len(n.input) >= 2 and from_dq(n.input[0]) and from_dq(n.input[1]))
            for n in graph.node if n.op_type in COMPUTE_OPS]


# -- dims and producers (calibration) ------------------------------------------------------------------
# Shared rules: "is this dim dynamic" (a dim_value of -1 or 0, a dim_param, or no value at all) and
# "which op really produced this tensor" (looking through ops that only move or select values).

#: Ops that only move, select or copy values of their first input: the output's value set is a
#: subset of the input's, so a range known for the input holds for the output.
VALUE_PRESERVING_OPS = frozenset({
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather", "GatherElements",
    "GatherND", "Expand", "Tile", "Split", "Dropout", "MaxPool", "SpaceToDepth", "DepthToSpace", "ReduceMax",
})


def is_dynamic_dim(dim: onnx.TensorShapeProto.Dimension) -> bool:
    """True when ``dim`` is not a fixed positive size: ``dim_param``, no value, or ``dim_value`` <= 0.

    Exporters store an unknown size as ``dim_value: -1`` (Paddle2ONNX) or ``0`` as well as a named
    ``dim_param``; all mean "any size".
    """
    return not dim.HasField("dim_value") or dim.dim_value <= 0


def value_dims(vi: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    """Dims of a tensor value info, ``None`` for each dynamic dim (see :func:`is_dynamic_dim`)."""
    return tuple(None if is_dynamic_dim(d) else int(d.dim_value) for d in vi.type.tensor_type.shape.dim)


def value_dim_names(vi: onnx.ValueInfoProto) -> tuple[str | None, ...]:
    """The ``dim_param`` of each dim of a tensor value info (``None`` where there is none)."""
    return tuple(d.dim_param if d.HasField("dim_param") and d.dim_param else None
                 for d in vi.type.tensor_type.shape.dim)


def with_symbolic_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself, or a copy whose graph input/output dims stored as ``-1`` / ``0`` are named dims.

    ONNX Runtime takes ``dim_value: 0`` literally (a zero-size axis) and refuses any real batch;
    a named ``dim_param`` means the same "any size" to every runtime.
    """
    g = model.graph
    bad = [d for vi in list(g.input) + list(g.output) for d in vi.type.tensor_type.shape.dim
           if d.HasField("dim_value") and d.dim_value <= 0]
    if not bad:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    k = 0
    for vi in list(out.graph.input) + list(out.graph.output):
        for ax, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.dim_param = "N" if ax == 0 else f"unk_{k}"  # setting dim_param clears dim_value (oneof)
                k += 1
    return out


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
    prod = producers(graph)
    seen: set[str] = set()
    node = prod.get(tensor)
    while node is not None and node.input:
        nxt = None
        if node.op_type in through:
            nxt = node.input[0]
        elif node.op_type == "Where" and where_max is not None and len(node.input) == 3:
            for const, other in ((1, 2), (2, 1)):
                v = initializer_array(graph, node.input[const])
                if v is not None and v.size and np.issubdtype(v.dtype, np.number) and \
                        float(np.abs(v).max()) <= where_max and initializer_array(graph, node.input[other]) is None:
                    nxt = node.input[other]
                    break
        if nxt is None or nxt in seen:
            break
        seen.add(nxt)
        node = prod.get(nxt)
    return node


# -- placeholder dim names (TensorRT parse; owner: tensorrt backend) -----------------------------------
# TensorRT's ONNX parser treats equal ``dim_param`` names as ONE dimension across the whole network: a
# dim named ``batch`` on two inputs must have one size. Paddle2ONNX names EVERY unknown dim ``"?"``, so a
# classifier input ``[-1, 3, "?", "?"]`` reads as "H and W are the same dim" and a 48x192 profile
# contradicts it. ``"?"`` and ``""`` mean "unknown", never "shared": they get unique names before parsing.
# Generated names (``unk__123``, ``p2o.DynamicDimension.0``, ``batch``) are real names and stay.

#: ``dim_param`` values that mean "unknown size", not a name shared between axes.
PLACEHOLDER_DIM_NAMES = frozenset({"?", ""})


def placeholder_dims(model: onnx.ModelProto) -> list[tuple[str, int, str]]:
    """Graph input/output dims whose ``dim_param`` is a placeholder (:data:`PLACEHOLDER_DIM_NAMES`).

    Returns:
        ``(tensor name, axis, dim_param)`` per such dim, inputs first, in graph order.
    """
    g = model.graph
    return [(vi.name, ax, d.dim_param) for vi in list(g.input) + list(g.output)
            for ax, d in enumerate(vi.type.tensor_type.shape.dim)
            if d.HasField("dim_param") and d.dim_param.strip() in PLACEHOLDER_DIM_NAMES]


def with_unique_placeholder_dims(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` itself, or a copy whose placeholder dim names are unique (``<tensor>_dim<axis>``).

    Only graph inputs and outputs are renamed (what a parser reads as the network's I/O); the model is
    not otherwise changed, so external-data references stay valid when it is parsed with its path.

    Returns:
        ``(model or copy, {"x[2]": "x_dim2", ...})``; the dict is empty when nothing needed a name.
    """
    if not placeholder_dims(model):
        return model, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    taken = {d.dim_param for vi in list(g.input) + list(g.output) for d in vi.type.tensor_type.shape.dim
             if d.HasField("dim_param")}
    renamed: dict[str, str] = {}
    for vi in list(g.input) + list(g.output):
        for ax, d in enumerate(vi.type.tensor_type.shape.dim):
            if not (d.HasField("dim_param") and d.dim_param.strip() in PLACEHOLDER_DIM_NAMES):
                continue
            base = new = f"{vi.name}_dim{ax}"
            k = 1
            while new in taken:
                new, k = f"{base}_{k}", k + 1
            taken.add(new)
            d.dim_param = new
            renamed[f"{vi.name}[{ax}]"] = new
    return out, renamed
