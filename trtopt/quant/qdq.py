"""Explicit INT8 quantization: insert QuantizeLinear/DequantizeLinear the way TensorRT wants them.

Placement (ModelOpt's TensorRT-friendly policy; the rules shared with calibration are in
:mod:`trtopt.placement`):

* both inputs of every Conv / ConvTranspose / Gemm / MatMul are quantized: the activation
  per-tensor from the calibration table, a constant weight per output channel (Conv axis 0,
  ConvTranspose axis 1, Gemm ``transB=1`` axis 0 / ``transB=0`` axis 1, MatMul 2-D constant B axis 1);
  a constant *first* input (``W @ x``) per-tensor, since TensorRT's per-channel MatMul weights must be
  the second input; weights stay float behind a Q->DQ pair (TensorRT quantizes them at build time);
* initializers and ``Constant`` nodes are both weights; constant Transpose/Reshape/Cast chains are
  folded into one weight first (:mod:`trtopt.prepare`, which also raises opset 11/12 to 13,
  folds BatchNormalization into Conv/ConvTranspose and refuses quantized / FP16 models);
* symmetric INT8, zero point 0, scale = amax / 127; weighted-op outputs are not quantized;
* residual Add: TensorRT fuses the Add into the conv producing one input; the *other* (skip)
  input decides the fused output precision, so it is quantized. As in ModelOpt's
  ``build_non_residual_input_map`` the input on the longer path to the lowest common ancestor
  is the fusing conv branch (left alone) and the shorter one is quantized;
* no Q/DQ anywhere else (pooling, ReLU, Reshape, Concat, ...), which TensorRT would have to
  reformat around; one shared Q/DQ pair per tensor (``DedicatedQDQPair=False``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtopt.calib.table import CalibrationTable
from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger
from trtopt.onnx.external import model_hash_on_disk
from trtopt.onnx.graph import GraphIndex, NameGen, as_model, opset_of, producers
from trtopt.onnx.io import load_graph_over_limit, model_hash
from trtopt.onnx.ops import WEIGHTED_OPS
from trtopt.onnx.rewrite import drop_unused, upgrade_opset
from trtopt.placement import residual_skip_inputs, weight_axis
from trtopt.prepare import prepare_model
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.summary import QdqSummary, nothing_quantized, store_summary

log = get_logger(__name__)
_FP16_MIN_SCALE = 2.0**-14  # smallest normal FP16, so FP16 scales never flush to 0


@dataclass(frozen=True)
class PreparedModel:
    """An FP32 model and the prepared graph Q/DQ goes into, made once (searches quantize it many times).

    Attributes:
        source: The model as given.
        model: :func:`trtopt.prepare.prepare_model`'s result (never modified: each quantization copies it).
        notes: The preparation steps applied.
        hash: sha256 of ``model`` (what a calibration table records).
    """

    source: onnx.ModelProto
    model: onnx.ModelProto
    notes: tuple[str, ...]
    hash: str


@dataclass(frozen=True)
class QdqResult:
    """What :func:`quantize_qdq` made.

    Attributes:
        model: The Q/DQ model.
        summary: What Q/DQ insertion did (also written into ``model`` as the ``trtopt.int8.summary``
            metadata entry, for readers of the saved file).
        fp16_reasons: With ``fp16_rest``: node -> why it stays FP32 (empty otherwise).
    """

    model: onnx.ModelProto
    summary: QdqSummary
    fp16_reasons: dict[str, str] = field(default_factory=dict)


def prepare_for_qdq(model: str | os.PathLike[str] | onnx.ModelProto) -> PreparedModel:
    """Load (when needed) and prepare ``model`` once for :func:`quantize_qdq`."""
    src = as_model(model)
    prepared, notes = prepare_model(src)
    graph = None if prepared is not src or isinstance(model, onnx.ModelProto) else load_graph_over_limit(model)
    # over 2 GB: hashed from the file (the same hash; no copy of the weights in protobuf's arena)
    digest = model_hash(prepared) if graph is None else model_hash_on_disk(graph, Path(model).parent)
    return PreparedModel(src, prepared, tuple(notes), digest)


def _excluded(node: onnx.NodeProto, cfg: QuantizeConfig) -> bool:
    return node.op_type in cfg.exclude_op_types or any(re.search(p, node.name) for p in cfg.exclude_nodes)


class _Inserter:
    """Accumulates Q/DQ pairs and rewires consumers."""

    def __init__(self, model: onnx.ModelProto, fp16_scales: bool) -> None:
        self.g = model.graph
        self.names = NameGen(self.g)
        self.fp16_scales = fp16_scales
        self.after: dict[str, list[onnx.NodeProto]] = {}  # producer tensor -> Q/DQ nodes to emit after it
        self.pairs: dict[tuple[str, int | None], str] = {}

    def _scale(self, amax: np.ndarray) -> np.ndarray:
        scale = (amax / 127.0).astype(np.float32)
        return np.maximum(scale, _FP16_MIN_SCALE) if self.fp16_scales else scale

    def pair(self, tensor: str, amax: np.ndarray, axis: int | None) -> str:
        """Return the DQ output for ``tensor`` (creating Q->DQ once per tensor/axis)."""
        key = (tensor, axis)
        if key in self.pairs:
            return self.pairs[key]
        base = tensor.replace(":", "_")
        scale = self._scale(np.asarray(amax, dtype=np.float64))
        s_name, z_name = self.names(f"{base}_scale"), self.names(f"{base}_zero_point")
        self.g.initializer.append(numpy_helper.from_array(scale, s_name))
        self.g.initializer.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name))
        q_out, dq_out = self.names(f"{base}_quantized"), self.names(f"{base}_dequantized")
        kw = {} if axis is None else {"axis": axis}
        nodes = [
            helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out],
                             name=self.names(f"{base}_QuantizeLinear"), **kw),
            helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                             name=self.names(f"{base}_DequantizeLinear"), **kw),
        ]
        self.after.setdefault(tensor, []).extend(nodes)
        self.pairs[key] = dq_out
        return dq_out

    def int8_weight(self, tensor: str, weight: np.ndarray, amax: np.ndarray, axis: int | None) -> str:
        """Store ``weight`` pre-quantized as INT8 and return the output of its DequantizeLinear."""
        key = (tensor, axis)
        if key in self.pairs:
            return self.pairs[key]
        base = tensor.replace(":", "_")
        scale = self._scale(np.asarray(amax, dtype=np.float64))
        bshape = [1] * weight.ndim
        if axis is not None:
            bshape[axis] = -1
        q = _int8(weight, scale.reshape(bshape))
        q_name, s_name = self.names(f"{base}_int8"), self.names(f"{base}_scale")
        z_name, dq_out = self.names(f"{base}_zero_point"), self.names(f"{base}_dequantized")
        self.g.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name),
                                   numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name)])
        kw = {} if axis is None else {"axis": axis}
        self.after.setdefault(q_name, []).append(helper.make_node(
            "DequantizeLinear", [q_name, s_name, z_name], [dq_out], name=self.names(f"{base}_DequantizeLinear"), **kw))
        self.pairs[key] = dq_out
        return dq_out

    def finish(self) -> None:
        """Re-emit nodes with each Q/DQ pair right after its producer (keeps topological order)."""
        new: list[onnx.NodeProto] = []
        for t in [i.name for i in self.g.input] + [t.name for t in self.g.initializer]:
            new.extend(self.after.pop(t, []))
        for n in self.g.node:
            new.append(n)
            for o in n.output:
                new.extend(self.after.pop(o, []))
        for rest in self.after.values():  # tensors with no producer in the graph body
            new[:0] = rest
        del self.g.node[:]
        self.g.node.extend(new)


def _int8(weight: np.ndarray, scale: np.ndarray, block: int = 1 << 22) -> np.ndarray:
    """``clip(rint(weight / scale), -128, 127)`` as int8, in float64 like QuantizeLinear (round half to even).

    Computed over blocks of ``weight``'s leading axis (about ``block`` elements each): elementwise,
    so the result is the same as one pass, while the float64 temporaries stay a few MB instead of
    4x the weight (a 1 GB float32 weight would need 2 GB per float64 temporary).
    """
    out = np.empty(weight.shape, np.int8)
    if weight.ndim == 0 or weight.size == 0:
        out[...] = np.clip(np.rint(weight.astype(np.float64) / scale), -128, 127)
        return out
    rows = max(1, block // max(1, weight.size // weight.shape[0]))
    for i in range(0, weight.shape[0], rows):
        s = scale[i:i + rows] if scale.ndim and scale.shape[0] > 1 else scale
        r = weight[i:i + rows].astype(np.float64)
        np.divide(r, s, out=r)
        np.rint(r, out=r)
        np.clip(r, -128, 127, out=r)
        out[i:i + rows] = r
    return out


def _activation_amax(table: CalibrationTable, name: str, cfg: QuantizeConfig) -> np.ndarray | None:
    if name not in table.amax:
        return None
    return np.asarray(max(table.amax[name], cfg.min_amax), dtype=np.float64)


def _weight_amax(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Max |w| per tensor (``axis=None``) or per ``axis`` channel, float64; a zero channel gets 1.0.

    Taken as ``max(-min(w), max(w))`` in ``w``'s own dtype: exact, and no copy of the weight (a
    multi-GB weight is never duplicated in float64 just to find its maxima).
    """
    if not w.size:
        return np.asarray(1.0)
    reduce = None if axis is None else tuple(i for i in range(w.ndim) if i != axis)
    m = np.maximum(-w.min(axis=reduce).astype(np.float64), w.max(axis=reduce).astype(np.float64))
    return np.where(m > 0, m, 1.0)  # a zero channel stays zero under any scale; TRT needs scale > 0


def _plan_node(node: onnx.NodeProto, index: GraphIndex, table: CalibrationTable, cfg: QuantizeConfig
               ) -> tuple[list[tuple[int, np.ndarray, int | None]] | None, str]:
    """(input index, amax, axis) for each input of a weighted op, or (None, why it stays in float).

    A constant input is a weight: per output channel when TensorRT accepts per-channel scales on it
    (Conv/ConvTranspose/Gemm B, MatMul with a constant 2-D *second* input), per-tensor otherwise; a
    constant *first* input of MatMul/Gemm (``W @ x``) is quantized per-tensor because TensorRT's
    per-channel weight rule for MatMul needs the constant as the second input.
    Non-constant inputs are activations and need a calibrated range.
    """
    plan = []
    weights = 0
    for i in (0, 1):
        if i >= len(node.input) or not node.input[i]:
            return None, f"input {i} is missing"
        w = index.array(node.input[i])
        if w is not None:
            weights += 1
            if not np.issubdtype(w.dtype, np.floating):
                return None, f"constant input {i} '{node.input[i]}' has dtype {w.dtype} (not float)"
            if i == 0 and node.op_type in ("Conv", "ConvTranspose"):
                return None, "constant data input"
            axis = weight_axis(node, w) if cfg.per_channel and i == 1 else None
            plan.append((i, _weight_amax(w, axis), axis))
        else:
            amax = _activation_amax(table, node.input[i], cfg)
            if amax is None:
                return None, f"no calibrated range for activation input {i} '{node.input[i]}'"
            plan.append((i, amax, None))
    if weights == 2:
        return None, "both inputs are constant (constant-folded by TensorRT)"
    return plan, ""


def quantize_qdq(model: str | os.PathLike[str] | onnx.ModelProto | PreparedModel, table: CalibrationTable,
                 config: QuantizeConfig | None = None, fp16_ranges: dict[str, float] | None = None,
                 allow_empty: bool = False) -> QdqResult:
    """Insert Q/DQ nodes into an FP32 model using a calibration table.

    Args:
        model: FP32 ``.onnx`` path or ModelProto (not modified), or its :func:`prepare_for_qdq` result
            (prepared once for many calls).
        table: Activation ranges from :func:`trtopt.calib.calibrate` for this model.
        config: Placement options; ``fp16_rest=True`` also converts the rest of the graph to FP16.
        fp16_ranges: Optional ``{tensor: max|x|}`` over calibration data for the FP16 data rule
            (the table's own ranges are used otherwise).
        allow_empty: Return the model unquantized instead of raising when no node gets Q/DQ (for
            searches such as the accuracy budget that may exclude every layer on purpose).

    Returns:
        The quantized model (runs in ONNX Runtime on CPU; TensorRT builds it strongly typed) and its
        :class:`~trtopt.quant.summary.QdqSummary`.

    The model first goes through :func:`trtopt.prepare.prepare_model` (the same step
    ``calibrate`` runs): opset 11/12 is raised to 13, BatchNormalization after Conv/ConvTranspose
    is folded, constant Transpose/Reshape/Cast chains become weights. The model also carries the
    summary as a ``trtopt.int8.summary`` metadata entry (JSON), provenance for readers of the saved file.

    Raises:
        IncompatibleArtifactError: The table was made for another model.
        InputError: Nothing would be quantized (no Q/DQ node), an already-quantized or float16 model,
            compute only inside If/Loop/Scan, or an opset that cannot be raised to 13.
    """
    cfg = config or QuantizeConfig()
    prep = model if isinstance(model, PreparedModel) else prepare_for_qdq(model)
    src, prepared, notes = prep.source, prep.model, list(prep.notes)
    if isinstance(model, (onnx.ModelProto, PreparedModel)):  # the caller's model is never changed
        m = onnx.ModelProto()
        m.CopyFrom(prepared)
    else:  # loaded here from a path: nobody else holds it (no second copy of a multi-GB model)
        m = prepared
    opset = opset_of(m)
    names = {t for g0 in (src.graph, m.graph) for n in g0.node for t in list(n.input) + list(n.output)}
    names |= {i.name for i in m.graph.input}
    # every entry must name a tensor of this model (before preparation: a folded BN's input is fine too)
    table.check_names(names, what="calibration table")
    if table.model_hash and table.model_hash != prep.hash:
        # Same tensor names but other bytes: e.g. a dense model's table applied to its pruned copy.
        log.warning("the calibration table was made for a different model (sha256 %s...); its ranges may not "
                    "fit this one: re-run `trtopt calibrate` on this exact model", table.model_hash[:12])
    if cfg.fp16_rest and opset < 19:
        try:
            m = upgrade_opset(m, 19)
        except InputError as exc:
            raise ConfigError(f"cannot raise the model to opset 19 for FP16 Q/DQ scales: {exc}") from exc
    g = m.graph
    if cfg.smoothquant_alpha > 0:
        from trtopt.quant.smooth import smooth_model

        sq = smooth_model(m, table, cfg.smoothquant_alpha,
                          selected=lambda n: n.op_type in cfg.op_types and not _excluded(n, cfg))
        table = CalibrationTable({**table.amax, **sq.amax}, table.method, table.data_hash, table.model_hash,
                                 table.num_samples, dict(table.meta))
    ins = _Inserter(m, fp16_scales=cfg.fp16_rest)
    index = GraphIndex(g)  # weighted ops' inputs keep their names while Q/DQ is inserted
    quantized: set[str] = set()
    kept: dict[str, str] = {}  # node -> why it stays in float
    for node in list(g.node):
        if node.op_type not in cfg.op_types:
            continue
        if _excluded(node, cfg):
            kept[node.name or node.output[0]] = "excluded"
            continue
        plan, why = _plan_node(node, index, table, cfg)
        if plan is None:
            kept[node.name or node.output[0]] = why
            continue
        for i, amax, axis in plan:
            w = index.array(node.input[i]) if cfg.weight_storage == "int8" else None
            if w is not None and w.dtype.kind == "f":
                node.input[i] = ins.int8_weight(node.input[i], w, amax, axis)
            else:
                node.input[i] = ins.pair(node.input[i], amax, axis)
        quantized.add(node.name)
    if cfg.quantize_residual_add:
        skips = residual_skip_inputs(g, quantized)
        for node in g.node:
            skip = skips.get(node.name) if node.op_type == "Add" else None
            if skip is None or _excluded(node, cfg):
                continue
            amax = _activation_amax(table, node.input[skip], cfg)
            if amax is not None:
                node.input[skip] = ins.pair(node.input[skip], amax, None)
    if not quantized and not allow_empty:
        raise InputError(nothing_quantized(g, cfg.op_types, kept, table))
    ins.finish()
    if cfg.weight_storage == "int8":  # the float originals of pre-quantized weights are now unused
        drop_unused(g)
    summary = store_summary(m, quantized, kept, notes)
    if cfg.fp16_rest:
        from trtopt.quant.fp16 import convert_fp16

        f16 = convert_fp16(m, ranges=fp16_ranges if fp16_ranges is not None else dict(table.amax))
        return QdqResult(f16.model, summary, f16.fp32_reasons)
    return QdqResult(m, summary)


def qdq_nodes_for(model: onnx.ModelProto) -> dict[str, list[str]]:
    """For inspection/tests: weighted node name -> producers (op types) of its first two inputs."""
    prod = producers(model.graph)
    return {n.name: [prod[i].op_type if i in prod else "<input>" for i in n.input[:2]]
            for n in model.graph.node if n.op_type in WEIGHTED_OPS}

