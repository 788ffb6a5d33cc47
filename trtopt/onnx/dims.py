"""Dims of graph inputs and outputs: dynamic dims, named dims, and placeholder dim names.

Two rules live here. "Is this dim dynamic": a ``dim_value`` of -1 or 0, a ``dim_param``, or no value
at all. "Is this ``dim_param`` a placeholder": TensorRT's ONNX parser treats equal ``dim_param``
names as ONE dimension across the whole network, so a dim named ``batch`` on two inputs must have one
size. Paddle2ONNX names EVERY unknown dim ``"?"``, so a classifier input ``[-1, 3, "?", "?"]`` reads
as "H and W are the same dim" and a 48x192 profile contradicts it. ``"?"`` and ``""`` mean
"unknown", never "shared": they get unique names before parsing. Generated names (``unk__123``,
``p2o.DynamicDimension.0``, ``batch``) are real names and stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx


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


@dataclass(frozen=True)
class GraphInput:
    """One real input of an ONNX graph (an input that is no initializer), as the graph declares it.

    Attributes:
        name: Input name.
        dims: Each axis's size, ``None`` where dynamic (:func:`is_dynamic_dim`).
        dim_names: Each axis's ``dim_param`` (``None`` where it has none).
        elem_type: ONNX element type (``onnx.TensorProto.FLOAT``, ...; 0 when undeclared).
        value: The value info itself (for messages that show the raw dims).
    """

    name: str
    dims: tuple[int | None, ...]
    dim_names: tuple[str | None, ...]
    elem_type: int
    value: onnx.ValueInfoProto

    @property
    def np_dtype(self) -> np.dtype | None:
        """The numpy dtype of :attr:`elem_type` (``None`` when undeclared or without one, e.g. strings)."""
        if not self.elem_type:
            return None
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def dtype_name(self) -> str:
        """``float32``, ``int64``, ``bool``, ... (``float32`` when undeclared; ``?`` for a type numpy lacks)."""
        if not self.elem_type:
            return "float32"
        dt = self.np_dtype
        return "?" if dt is None else dt.name


def graph_inputs(model: onnx.ModelProto | onnx.GraphProto) -> list[GraphInput]:
    """The graph's real inputs in order: declared inputs that are not initializers (old exporters list both).

    The one description of a model's inputs read from the graph; user declarations with ranges are
    :class:`trtopt.inputs.InputSpec` (:func:`trtopt.inputs.specs_from_onnx` builds them from this).
    """
    g = model.graph if isinstance(model, onnx.ModelProto) else model
    inits = {t.name for t in g.initializer}
    return [GraphInput(vi.name, value_dims(vi), value_dim_names(vi), vi.type.tensor_type.elem_type, vi)
            for vi in g.input if vi.name not in inits]
