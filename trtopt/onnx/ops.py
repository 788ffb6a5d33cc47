"""The op-type sets every stage agrees on: one definition each.

Each set is a plain tuple or frozenset of ONNX op types (default domain). A stage that needs a
narrower set says so where it filters, rather than keeping its own copy. This module imports
nothing, so stage configs can name these sets without importing ``onnx``.
"""

from __future__ import annotations

#: Ops whose cost dominates a network (what calibration, Q/DQ and 2:4 sparsity act on).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: The explicit-quantization (Q/DQ) pair.
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

#: Ops that mark a graph as already quantized: Q/DQ, dynamic quantization and the QOperator ops.
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
             "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm")

#: Layout-only ops TensorRT's Q/DQ fusion looks through between a DequantizeLinear and its consumer.
LAYOUT_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")

#: Single-input (apart from constant shape/axes operands) ops a constant can be traced through.
CONST_LOOK_THROUGH = ("Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten")

#: Ops that only move, select or copy values of their first input: the output's value set is a
#: subset of the input's, so a range known for the input holds for the output.
VALUE_PRESERVING_OPS = frozenset({
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather", "GatherElements",
    "GatherND", "Expand", "Tile", "Split", "Dropout", "MaxPool", "SpaceToDepth", "DepthToSpace", "ReduceMax",
})

#: ONNX element types that are floating point: ``TensorProto.FLOAT`` (1), ``FLOAT16`` (10), ``DOUBLE``
#: (11) and ``BFLOAT16`` (16), the values the ONNX spec fixes for ``TensorProto.DataType``.
FLOAT_TYPES = frozenset({1, 10, 11, 16})
