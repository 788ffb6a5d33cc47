"""Explicit INT8 (Q/DQ) quantization, FP16 conversion and the accuracy budget.

:func:`quantize` is the one entry point (``trtopt quantize`` and the recipe call it); the steps
below it stay public. Example::

    from trtopt.quant import CalibData, QuantizeConfig, quantize_qdq, FP16Config, convert_fp16, quantize
    res = quantize("model.onnx", table, QuantizeConfig(), CalibData(feeds))  # + fidelity guard
    q = quantize_qdq("model.onnx", table, QuantizeConfig())  # INT8 Q/DQ, rest FP32: q.model, q.summary
    both = quantize_qdq("model.onnx", table, QuantizeConfig(fp16_rest=True)).model  # INT8 + FP16
    bert = quantize_qdq("bert.onnx", table, QuantizeConfig(smoothquant_alpha=0.8)).model  # + SmoothQuant
    f16 = convert_fp16("model.onnx", FP16Config())  # FP16, FP32 graph I/O: f16.model, f16.fp32_reasons
"""

from trtopt.quant.api import Budget, CalibData, QuantizeResult, quantize
from trtopt.quant.budget import BudgetResult, apply_accuracy_budget
from trtopt.quant.config import DEFAULT_FP16_BLOCK_OPS, FP16Config, QuantizeConfig
from trtopt.quant.fp16 import FP16Result, blocked_nodes, convert_fp16
from trtopt.quant.fp16_patterns import layernorm_pattern_nodes, norm_chain_nodes
from trtopt.quant.qdq import QdqResult, quantize_qdq
from trtopt.quant.smooth import SmoothResult, smooth_model, smoothing_scales
from trtopt.quant.summary import QdqSummary

__all__ = [
    "DEFAULT_FP16_BLOCK_OPS", "Budget", "BudgetResult", "CalibData", "FP16Config", "FP16Result", "QdqResult",
    "QdqSummary", "QuantizeConfig", "QuantizeResult", "SmoothResult", "apply_accuracy_budget", "blocked_nodes",
    "convert_fp16", "layernorm_pattern_nodes", "norm_chain_nodes", "quantize", "quantize_qdq", "smooth_model",
    "smoothing_scales",
]
