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


# -- dims and producers (calibration: issue 11 items 2 and 6) ------------------------------------------
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
