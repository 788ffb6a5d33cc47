"""Model preparation shared by ``calibrate`` and ``quantize``: one graph, checked and normalised once.

Third-party exports (Paddle2ONNX, old tf2onnx, ...) differ from trtopt's own exports in ways that
made the INT8 path fail late or silently. :func:`prepare_model` runs *before*
calibration and again (as a no-op on an already-prepared graph) before Q/DQ insertion, so both
see the same tensor names and the same model hash:

* refuses graphs INT8 Q/DQ cannot be applied to: already-quantized models (QuantizeLinear /
  DequantizeLinear, QLinear*/ConvInteger/MatMulInteger), models that compute in float16, and
  models whose Conv/Gemm/MatMul all sit inside If/Loop/Scan subgraphs;
* raises opset 11/12 to 13 with ``onnx.version_converter`` (per-axis Q/DQ needs 13);
* folds constant-only ``Transpose``/``Reshape``/``Cast``/... chains feeding a weighted op into one
  constant of the same name, so the weight is quantized per channel like any initializer;
* folds ``BatchNormalization`` that follows a Conv or ConvTranspose into its weight and bias
  (TensorRT does not fuse Q/DQ + ConvTranspose + BN; Paddle exports keep BN separate), keeping the
  BN's output tensor name so calibration tables stay valid.

Every step is deterministic, so preparing the same file twice gives byte-identical models.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.calib.collect import constant_names, float_tensor_types
from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx_graph import (
    CONST_LOOK_THROUGH,
    WEIGHTED_OPS,
    NameGen,
    constant_chain,
    consumers,
    describe_subgraph_ops,
    evaluate_chain,
    get_attr,
    initializer_array,
    iter_nodes,
    producers,
    subgraph_op_counts,
)

log = get_logger(__name__)

MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
              "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm")
_LOW_FLOATS = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


def opset_of(model: onnx.ModelProto) -> int:
    """Default-domain (``ai.onnx``) opset version of ``model`` (0 when absent)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_not_quantized(model: onnx.ModelProto) -> None:
    """Raise :class:`InputError` if the model (or any subgraph) already holds quantization ops.

    A second Q/DQ pair chained onto an existing one double-rounds every activation; QOperator ops
    (QLinearConv, MatMulInteger, ...) are not accepted by TensorRT at all.
    """
    found: dict[str, int] = {}
    for _, n in iter_nodes(model.graph):
        if n.op_type in _QUANT_OPS:
            found[n.op_type] = found.get(n.op_type, 0) + 1
    if found:
        what = ", ".join(f"{c} {op}" for op, c in sorted(found.items()))
        raise InputError(f"the model is already quantized ({what}): quantize the original FP32 model instead")


def check_not_fp16(model: onnx.ModelProto) -> None:
    """Raise :class:`InputError` if a weighted op computes in float16/bfloat16.

    QuantizeLinear on a float16 input needs float16 scales (opset 19) and a consistent graph;
    ONNX Runtime refuses the mixed result. INT8 + FP16 is made from the FP32 model instead.
    """
    types = float_tensor_types(model)
    g = model.graph
    for t in list(g.initializer):
        types.setdefault(t.name, t.data_type)
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            val = next((a.t for a in n.attribute if a.name == "value"), None)
            if val is not None:
                types.setdefault(n.output[0], val.data_type)
    for n in g.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        for t in n.input[:2]:
            if types.get(t) in _LOW_FLOATS:
                raise InputError(
                    f"the model computes in {_LOW_FLOATS[types[t]]} ({n.op_type} '{n.name or n.output[0]}' input "
                    f"'{t}'): INT8 Q/DQ needs the FP32 model; quantize the FP32 model and add --fp16-rest "
                    "for INT8 + FP16")


def check_control_flow(model: onnx.ModelProto) -> str:
    """Describe Conv/Gemm/MatMul inside If/Loop/Scan subgraphs; raise if *all* of them are there.

    trtopt calibrates and quantizes the top-level graph only (ONNX Runtime cannot expose a
    subgraph tensor as a graph output, so it cannot be calibrated).

    Returns:
        ``""`` when no subgraph holds weighted ops, else a note naming them (left in float).

    Raises:
        InputError: The top-level graph has no weighted op while subgraphs do.
    """
    counts = subgraph_op_counts(model.graph)
    if not counts:
        return ""
    what = describe_subgraph_ops(counts)
    if not any(n.op_type in WEIGHTED_OPS for n in model.graph.node):
        raise InputError(
            f"all Conv/Gemm/MatMul nodes are inside control-flow subgraphs ({what}): trtopt calibrates and "
            "quantizes the top-level graph only; export the model without If/Loop/Scan (e.g. trace one branch "
            "or unroll the loop), or use --fp16")
    return f"left in float inside control-flow subgraphs (not calibrated): {what}"


def upgrade_opset(model: onnx.ModelProto, target: int = MIN_OPSET) -> onnx.ModelProto:
    """Return ``model`` converted to opset ``target`` with ``onnx.version_converter``.

    Raises:
        InputError: The converter cannot convert the model (with the fix in the message).
    """
    from onnx import version_converter

    old = opset_of(model)
    try:
        out = version_converter.convert_version(model, target)
        onnx.checker.check_model(out)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"the model has opset {old}; Q/DQ INT8 needs opset >= {target} and onnx.version_converter could not "
            f"convert it ({first}): re-export the model with opset >= {target}") from exc
    return out


def fold_constant_chains(model: onnx.ModelProto) -> list[str]:
    """Replace constant-only Transpose/Reshape/Cast/... chains feeding weighted ops by one constant.

    The folded tensor keeps the chain's output name; chain nodes left without consumers are removed.

    Returns:
        The folded tensor names.
    """
    g = model.graph
    outputs = {o.name for o in g.output}
    folded: dict[str, np.ndarray] = {}
    opset = opset_of(model)
    consts, prod = constant_names(g), producers(g)
    for n in g.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        for t in n.input:
            if t and t not in folded and t not in outputs:
                chain = constant_chain(g, t, consts=consts, prod=prod)
                if chain:
                    folded[t] = evaluate_chain(g, chain, opset)
    if folded:
        # the chain's last node no longer produces the tensor: an initializer of the same name does
        _rebuild(g, lambda n: not any(o in folded for o in n.output))
        g.initializer.extend(numpy_helper.from_array(v, t) for t, v in folded.items())
        _drop_dead_constants(g)
    return list(folded)


def _rebuild(g: onnx.GraphProto, keep) -> None:
    """Keep only the nodes for which ``keep(node)`` is true (copies first: safe with any protobuf backend)."""
    new = []
    for n in g.node:
        if keep(n):
            c = onnx.NodeProto()
            c.CopyFrom(n)
            new.append(c)
    del g.node[:]
    g.node.extend(new)


def _dead(n: onnx.NodeProto, used: set[str]) -> bool:
    return (n.op_type == "Constant" or n.op_type in CONST_LOOK_THROUGH) and not any(o in used for o in n.output)


def _drop_dead_constants(g: onnx.GraphProto) -> None:
    """Remove unused Constant / look-through nodes (e.g. the rest of a folded chain) and unused initializers."""
    outputs = {o.name for o in g.output}
    while True:
        used = {i for _, n in iter_nodes(g) for i in n.input} | outputs
        if not any(_dead(n, used) for n in g.node):
            break
        _rebuild(g, lambda n, used=used: not _dead(n, used))
    inputs = {i.name for i in g.input}
    keep = [t for t in g.initializer if t.name in used or t.name in inputs]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


def fold_conv_bias_add(model: onnx.ModelProto) -> list[str]:
    """Fold ``Add(conv(x), c)`` with a per-output-channel constant ``c`` into the conv's bias.

    Paddle exports ConvTranspose without bias followed by an ``Add`` of a ``[1, C, 1, 1]`` constant
    and then BatchNormalization; folding the Add first lets :func:`fold_batchnorm` see the pattern.
    ``c`` must broadcast as ``[1, C, 1, ...]`` (right-aligned, every other dim 1). The conv takes over
    the Add's output name.

    Returns:
        Names of the folded Add nodes.
    """
    g = model.graph
    prod, cons = producers(g), consumers(g)
    outputs = {o.name for o in g.output}
    names = NameGen(g)
    drop: set[str] = set()
    folded: list[str] = []
    for add in list(g.node):
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        convs = [j for j in (0, 1) if add.input[j] in prod and prod[add.input[j]].op_type in ("Conv", "ConvTranspose")]
        k = convs[0] if convs else None
        if k is None:
            continue
        conv, c = prod[add.input[k]], initializer_array(g, add.input[1 - k])
        w = initializer_array(g, conv.input[1]) if len(conv.input) > 1 else None
        if c is None or w is None or w.dtype != c.dtype or w.dtype.kind != "f" or add.input[k] in outputs \
                or len(cons.get(add.input[k], [])) != 1 or conv.input[0] == add.input[k]:
            continue
        c_out = w.shape[0] if conv.op_type == "Conv" else w.shape[1] * int(get_attr(conv, "group", 1))
        full = [1] * (w.ndim - c.ndim) + list(c.shape)
        if c.ndim > w.ndim or full[1] != c_out or any(d != 1 for j, d in enumerate(full) if j != 1):
            continue
        b = initializer_array(g, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(c_out, w.dtype)
        if b is None:
            continue
        b_name = names(f"{add.output[0]}_bias_fold")
        g.initializer.append(numpy_helper.from_array((b.reshape(-1) + c.reshape(-1)).astype(w.dtype), b_name))
        if len(conv.input) > 2:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        drop.add(add.output[0])
        conv.output[0] = add.output[0]
        folded.append(add.name or add.output[0])
    if folded:
        _rebuild(g, lambda n: not (n.op_type == "Add" and n.output[0] in drop))
        _drop_dead_constants(g)
    return folded


def _bn_scale_shift(g: onnx.GraphProto, bn: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """``(s, t)`` with ``BN(y) = s * y + t`` per channel (float64), or None if a parameter is not constant."""
    if len(bn.input) < 5 or get_attr(bn, "training_mode", 0) or any(o for o in bn.output[1:]):
        return None
    params = [initializer_array(g, i) for i in bn.input[1:5]]
    if any(p is None or p.dtype.kind != "f" for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    s = gamma / np.sqrt(var + float(get_attr(bn, "epsilon", 1e-5)))
    return s, beta - mean * s


def fold_batchnorm(model: onnx.ModelProto) -> list[str]:
    """Fold ``BatchNormalization`` into a preceding Conv / ConvTranspose (top-level graph).

    ``BN(conv(x, W) + b) = conv(x, W * s) + (b * s + t)`` per output channel, with
    ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``. Conv weights are
    ``[C_out, C_in/group, k...]`` (channel axis 0); ConvTranspose weights are
    ``[C_in, C_out/group, k...]``, so output channel ``o = gi * C_out/group + j`` scales
    ``W[gi * C_in/group : (gi+1) * C_in/group, j]``. Folded in float64, stored in the weight's dtype.
    The conv takes over the BN's output name; its own output must feed only the BN.

    Returns:
        Names of the folded BatchNormalization nodes.
    """
    g = model.graph
    prod, cons = producers(g), consumers(g)
    outputs = {o.name for o in g.output}
    names = NameGen(g)
    folded: list[str] = []
    drop: set[str] = set()  # output names of folded BNs (the conv takes them over afterwards)
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization":
            continue
        conv = prod.get(bn.input[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose") or bn.input[0] in outputs \
                or len(cons.get(bn.input[0], [])) != 1:
            continue
        w = initializer_array(g, conv.input[1]) if len(conv.input) > 1 else None
        st = _bn_scale_shift(g, bn)
        if w is None or st is None or w.dtype not in (np.float32, np.float64) or w.ndim < 3:
            continue
        s, t = st
        group = int(get_attr(conv, "group", 1))
        c_out = w.shape[0] if conv.op_type == "Conv" else w.shape[1] * group
        if s.size != c_out or (conv.op_type == "ConvTranspose" and w.shape[0] % group):
            continue
        b = initializer_array(g, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(c_out)
        if b is None:
            continue
        w64 = w.astype(np.float64)
        if conv.op_type == "Conv":
            w_new = w64 * s.reshape(-1, *([1] * (w.ndim - 1)))
        else:
            cin_g, cout_g = w.shape[0] // group, w.shape[1]
            grouped = w64.reshape(group, cin_g, cout_g, *w.shape[2:])
            w_new = (grouped * s.reshape(group, 1, cout_g, *([1] * (w.ndim - 2)))).reshape(w.shape)
        b_new = b.astype(np.float64).reshape(-1) * s + t
        w_name, b_name = names(f"{conv.input[1]}_bnfold"), names(f"{bn.output[0]}_bias_bnfold")
        g.initializer.extend([numpy_helper.from_array(w_new.astype(w.dtype), w_name),
                              numpy_helper.from_array(b_new.astype(w.dtype), b_name)])
        old_out = conv.output[0]
        conv.input[1] = w_name
        if len(conv.input) > 2:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        drop.add(bn.output[0])
        conv.output[0] = bn.output[0]
        keep_vi = [v for v in g.value_info if v.name != old_out]
        del g.value_info[:]
        g.value_info.extend(keep_vi)
        folded.append(bn.name or bn.output[0])
    if folded:
        _rebuild(g, lambda n: not (n.op_type == "BatchNormalization" and n.output[0] in drop))
        _drop_dead_constants(g)
    return folded


def prepare_model(model: onnx.ModelProto, strict: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """Check and normalise a model for calibration and Q/DQ insertion (see the module docstring).

    Args:
        model: The FP32 model (not modified).
        strict: Refuse already-quantized, float16 and control-flow-only models and opsets that cannot
            be raised to 13 (INT8 use); with ``False`` (e.g. a ``scope="all"`` range collection for
            FP16) only the graph rewrites run, and a failed opset upgrade is a warning.

    Returns:
        ``(prepared model, notes)``: ``model`` itself when nothing changed (so its hash is unchanged),
        and one human-readable line per change or caveat (each also logged at INFO).

    Raises:
        InputError: The model cannot be quantized (already quantized, float16, compute only in
            subgraphs) or its opset cannot be raised to 13; the message says what to do.
    """
    notes: list[str] = []
    if strict:
        check_not_quantized(model)
        check_not_fp16(model)
    cf = check_control_flow(model) if strict else ""
    if cf:
        log.warning("%s", cf)
    m = model
    old = opset_of(model)
    if 0 < old < MIN_OPSET:
        try:
            m = upgrade_opset(model)
            notes.append(f"upgraded the model from opset {old} to {MIN_OPSET} (onnx.version_converter; per-axis "
                         f"Q/DQ needs {MIN_OPSET})")
        except InputError as exc:
            if strict:
                raise
            log.warning("%s (kept at opset %d)", exc, old)  # e.g. FP16 range collection: no Q/DQ needed
    copied = m is not model

    def writable() -> onnx.ModelProto:
        nonlocal m, copied
        if not copied:
            m = onnx.ModelProto()
            m.CopyFrom(model)
            copied = True
        return m

    consts, prod = constant_names(m.graph), producers(m.graph)
    if any(constant_chain(m.graph, t, consts=consts, prod=prod) for n in m.graph.node if n.op_type in WEIGHTED_OPS
           for t in n.input if t):
        chains = fold_constant_chains(writable())
        if chains:
            notes.append(f"folded {len(chains)} constant Transpose/Reshape/Cast chain(s) into weights")
    if any(n.op_type == "BatchNormalization" for n in m.graph.node):
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        adds = fold_conv_bias_add(probe)
        bns = fold_batchnorm(probe)
        if bns:  # bias Adds alone are left as they are (TensorRT fuses them): only folded on the way to a BN
            m, copied = probe, True
            notes.append(f"folded {len(bns)} BatchNormalization node(s) into the preceding Conv/ConvTranspose"
                         + (f" ({len(adds)} bias Add(s) first)" if adds else ""))
    for line in notes:
        log.info("%s", line)
    return m, notes + ([cf] if cf else [])
