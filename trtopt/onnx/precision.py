"""What precision a model computes in: already quantized, explicit Q/DQ, or float16 somewhere.

One answer per question for every stage: preparation refuses quantized and float16 models, the
doctor reports them, the benchmark labels a file's precision and the TensorRT build plan picks its
flags. Every question looks at the whole model, If/Loop/Scan bodies included.
"""

from __future__ import annotations

import onnx

from trtopt.onnx.constants import iter_constants
from trtopt.onnx.graph import get_attr
from trtopt.onnx.ops import QDQ_OPS, QUANT_OPS
from trtopt.onnx.walk import iter_graphs, iter_nodes


def quantization_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each quantization op (:data:`~trtopt.onnx.ops.QUANT_OPS`) in the model, subgraphs included.

    Returns:
        ``{op type: count}`` for the ops present, sorted by op type; empty for a float model.
    """
    found: dict[str, int] = {}
    for _, n in iter_nodes(model.graph):
        if n.op_type in QUANT_OPS:
            found[n.op_type] = found.get(n.op_type, 0) + 1
    return dict(sorted(found.items()))

def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the model already holds quantization: Q/DQ pairs, dynamic quantization or QOperator ops.

    QOperator ops are ``QLinearConv``, ``QLinearMatMul``, ``ConvInteger``, ``MatMulInteger``, ... (see
    :data:`~trtopt.onnx.ops.QUANT_OPS`), in any graph of the model.
    """
    return any(n.op_type in QUANT_OPS for _, n in iter_nodes(model.graph))

def has_qdq(model: onnx.ModelProto) -> bool:
    """True when the model holds ``QuantizeLinear`` / ``DequantizeLinear`` (explicit quantization), in any graph."""
    return any(n.op_type in QDQ_OPS for _, n in iter_nodes(model.graph))

def computes_fp16(model: onnx.ModelProto) -> bool:
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
