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


# -- compute nodes and their quantization (TensorRT build report; owner: tensorrt backend) ----------------
#: Ops TensorRT can run in INT8 when both inputs come from DequantizeLinear.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
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
