"""Configurations of the quantization stages (the ``[quantize]`` and ``[fp16]`` recipe tables)."""

from __future__ import annotations

from dataclasses import dataclass

from trtopt.errors import ConfigError
from trtopt.onnx.ops import WEIGHTED_OPS
from trtopt.patterns import check_patterns, check_regexes, to_regex
from trtopt.quant.repair import REPAIRS

#: Precision-sensitive ops kept in FP32 by :func:`trtopt.quant.convert_fp16`.
DEFAULT_FP16_BLOCK_OPS = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "LogSoftmax", "Exp", "Log",
    "Pow", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign", "Upsample", "Celu",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
)


#: characters that mark a pattern as a regular expression written where a glob is expected
_REGEX_MARKS = ("^", "$", "\\", ".*", ".+")


def exclude_to_regex(patterns: tuple[str, ...] | list[str], what: str = "--exclude") -> tuple[str, ...]:
    r"""Translate user exclusion patterns into regular expressions for ``re.search`` on node names.

    The syntax is :mod:`trtopt.patterns` (the same as ``trtopt prune --exclude``): an fnmatch glob
    matched against the WHOLE node name (``*/attention/*``, ``/fc*``), or ``re:<regex>`` searched
    anywhere in it. A glob that
    looks like a regular expression (contains ``^``, ``$``, ``\``, ``.*`` or ``.+``: quantize took
    regexes before) is refused with the ``re:`` spelling, rather than silently matching nothing.

    Raises:
        ConfigError: A pattern is empty, looks like a regex without ``re:``, or is a bad regex.
    """
    check_patterns(patterns, what)
    for p in patterns:
        if not p.startswith("re:") and any(m in p for m in _REGEX_MARKS):
            raise ConfigError(f"{what} '{p}' looks like a regular expression; patterns are globs matching the whole "
                              f"node name (e.g. '*/fc*'): write 're:{p}' for a regex")
    out = [to_regex(p) for p in patterns]
    return tuple(out)


@dataclass(frozen=True)
class QuantizeConfig:
    """Explicit (Q/DQ) INT8 quantization following TensorRT's placement rules (see :mod:`trtopt.quant.qdq`).

    Attributes:
        op_types: Weighted op types whose inputs (activation and weight) get Q/DQ.
        per_channel: Per-output-channel weight scales (else per-tensor).
        quantize_residual_add: Quantize the skip input of residual Adds so TensorRT fuses
            the Add into the conv with an INT8 output (ModelOpt's rule).
        exclude: Node names left unquantized, the user-facing syntax (recipes, ``--exclude``): an
            fnmatch glob over the whole name or ``re:<regex>`` (see :func:`exclude_to_regex`); merged
            into ``exclude_nodes``.
        exclude_nodes: Regular expressions (``re.search``) of node names left unquantized (the
            internal form; searches such as the fidelity guard append exact-name patterns here).
        exclude_op_types: Op types left unquantized.
        fp16_rest: Convert everything not in INT8 to FP16 (graph I/O stays FP32); raises the
            opset to 19 so Q/DQ scales can be FP16 (TensorRT 11's "INT8 + FP16" path).
        min_amax: Floor applied to calibrated amax values (a scale must be > 0).
        weight_storage: ``"float"`` keeps constant weights float behind a Q->DQ pair (TensorRT
            quantizes them at build time; ModelOpt's layout); ``"int8"`` stores them pre-quantized
            as INT8 initializers feeding a DequantizeLinear (a 4x smaller ONNX file, and no float
            weights shipped). TensorRT accepts both forms.
        smoothquant_alpha: ``0`` (off) or SmoothQuant's migration strength in (0, 1]: activations
            feeding MatMul/Gemm with constant weights are divided per input channel by
            ``s = amax_x^alpha / amax_w^(1-alpha)`` and the weights multiplied by it (exact in
            float), which tames transformer outlier channels. Needs a table from ``trtopt
            calibrate`` (per-channel maxima). ~0.8 suits BERT-style encoders; CNNs do not need it.
        fidelity_guard: Check the INT8 model against FP32 on calibration samples and keep the
            fewest most-sensitive layers in float that meet the fidelity tolerance
            (:func:`trtopt.quant.guard.guard_fidelity`; applied by :func:`trtopt.quant.quantize`
            when it is given calibration data, not by :func:`~trtopt.quant.qdq.quantize_qdq` itself).
        sensitivity: How the guard and the accuracy budget rank layers (:mod:`trtopt.quant.sensitivity`):
            ``"model"`` (default: the whole model's output error with that layer alone in INT8, one run per
            layer) or ``"local"`` (each layer's own output error under its Q/DQ inputs, one run for all
            layers: about 5x cheaper, but on PP-OCRv4 det it ranks worse, 28 layers kept in float where
            ``"model"`` keeps 16, and still lost a held-out box).
        repair: INT8 repairs applied to the Q/DQ model before the guard judges it, measured on the
            calibration data (:mod:`trtopt.quant.repair`): ``"bias"`` = per-channel bias correction.
            Applied by :func:`trtopt.quant.quantize` when it is given calibration data; not with ``fp16_rest``.
    """

    op_types: tuple[str, ...] = WEIGHTED_OPS
    per_channel: bool = True
    quantize_residual_add: bool = True
    exclude: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    fp16_rest: bool = False
    min_amax: float = 1e-20
    weight_storage: str = "float"
    smoothquant_alpha: float = 0.0
    fidelity_guard: bool = True
    sensitivity: str = "model"
    repair: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in ("op_types", "exclude", "exclude_nodes", "exclude_op_types", "repair"):
            val = getattr(self, f)
            if isinstance(val, str):
                val = (val,)
            object.__setattr__(self, f, tuple(val))
        unknown = set(self.op_types) - set(WEIGHTED_OPS)
        if unknown:
            raise ConfigError(f"quantize.op_types supports Conv, ConvTranspose, Gemm, MatMul; got {sorted(unknown)}")
        check_regexes(self.exclude_nodes, "quantize.exclude_nodes")
        extra = tuple(r for r in exclude_to_regex(self.exclude, "quantize.exclude") if r not in self.exclude_nodes)
        object.__setattr__(self, "exclude_nodes", self.exclude_nodes + extra)
        if self.weight_storage not in ("float", "int8"):
            raise ConfigError(f"quantize.weight_storage must be 'float' or 'int8', got '{self.weight_storage}'")
        if self.sensitivity not in ("local", "model"):
            raise ConfigError(f"quantize.sensitivity must be 'local' or 'model', got '{self.sensitivity}'")
        if not self.min_amax > 0:
            raise ConfigError(f"quantize.min_amax must be > 0, got {self.min_amax}")
        bad = [r for r in self.repair if r not in REPAIRS]
        if bad:
            raise ConfigError(f"quantize.repair takes {', '.join(REPAIRS)} (or none); got {', '.join(bad)}")
        if self.repair and self.fp16_rest:
            raise ConfigError("quantize.repair measures the INT8 model against FP32 with the same tensor names; it "
                              "does not combine with fp16_rest: drop one of them")
        if not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise ConfigError(f"quantize.smoothquant_alpha must be in [0, 1] (0 = off), got {self.smoothquant_alpha}")


@dataclass(frozen=True)
class FP16Config:
    """FP16 conversion with FP32 islands.

    Attributes:
        keep_io_types: Keep graph inputs/outputs FP32 (Casts inside the graph).
        op_block_list: Op types kept in FP32 (an If/Loop/Scan listed here keeps its bodies FP32 as
            written; by default bodies are converted like the top graph).
        node_block_list: Regular expressions of node names kept in FP32.
        block_layernorm_pattern: Keep normalizations written as elementwise ops and reductions in
            FP32: decomposed LayerNorm (ReduceMean/Sub/Pow/...) and every chain from a square through
            its reduction to the normalized result (RMSNorm, L2 normalization).
        data_max: Keep a node in FP32 when calibration data shows |activation| above this
            at its inputs or outputs (AutoCast's ``data_max``; needs calibration data).
        init_max: Keep a node in FP32 when one of its float constants exceeds this (FP16 max 65504).
        overflow_samples: With calibration data, run the FP16 overflow preview
            (:mod:`trtopt.quant.fp16_check`) on this many samples and keep overflowing nodes in FP32
            (0 turns it off).
        overflow_rounds: Preview/re-convert rounds before giving up with an error.
    """

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = DEFAULT_FP16_BLOCK_OPS
    node_block_list: tuple[str, ...] = ()
    block_layernorm_pattern: bool = True
    data_max: float = 512.0
    init_max: float = 65504.0
    overflow_samples: int = 4
    overflow_rounds: int = 4

    def __post_init__(self) -> None:
        if self.overflow_samples < 0 or self.overflow_rounds < 1:
            raise ConfigError("fp16.overflow_samples must be >= 0 and fp16.overflow_rounds >= 1")
        for f in ("op_block_list", "node_block_list"):
            val = getattr(self, f)
            object.__setattr__(self, f, (val,) if isinstance(val, str) else tuple(val))
        check_regexes(self.node_block_list, "fp16.node_block_list")
        if not self.data_max > 0 or not self.init_max > 0:
            raise ConfigError("fp16.data_max and fp16.init_max must be > 0")
