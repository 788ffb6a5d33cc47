"""Bias correction: remove the mean output shift INT8 rounding puts on each layer.

Source: M. Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction",
ICCV 2019, section 4.2 (empirical bias correction); NNCF's ``FastBiasCorrection`` applies the same
shift. Quantization error is not zero-mean per output channel: ``E[W_q x_q] != E[W x]``. On the
calibration data the per-channel means of each quantized layer's output are measured in the FP32
model and in the Q/DQ model (the same tensor names: Q/DQ insertion only rewires inputs), and the
difference is added to the layer's bias, so the INT8 layer's mean output equals FP32's.

Why trtopt's own and not NNCF's: NNCF corrects the model it quantized itself (its own placement and
UINT8 layout); this works on trtopt's TensorRT Q/DQ graph, on ONNX Runtime intermediates
(:mod:`trtopt.quant.repair.stats`).

A corrected shift upstream also moves every layer after it, so layers are corrected in topological
order, in ``steps`` consecutive groups: each group is measured on the Q/DQ model with the groups
before it already corrected (``steps`` = number of layers is Nagel's layer-by-layer order; fewer
steps cost fewer model runs: ``steps + 1`` in all).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from trtopt.onnx.graph import GraphIndex, NameGen, consumers, producers
from trtopt.quant.repair.stats import LayerMeans, channel_means

#: Op types whose bias input (index 2) is corrected, with their output channel axis.
BIAS_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1}


@dataclass(frozen=True)
class BiasCorrection:
    """What bias correction changed.

    Attributes:
        corrected: Node -> largest absolute change of its bias (in output units).
        skipped: Node -> why its bias was left alone (an INT8 layer with no correctable bias).
        steps: Measure-and-correct rounds run on the Q/DQ model.
        shifts: Layer output tensor -> the ``[C]`` shift added to its bias.
    """

    corrected: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    shifts: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _quantized(node: onnx.NodeProto, prod: Mapping[str, onnx.NodeProto]) -> bool:
    p = prod.get(node.input[1]) if len(node.input) > 1 else None
    return p is not None and p.op_type == "DequantizeLinear"


def _targets(model: onnx.ModelProto) -> tuple[dict[str, tuple[onnx.NodeProto, int, int]], dict[str, str]]:
    """INT8 layers whose bias can move: output tensor -> (node holding the bias, bias input index, channel axis).

    Conv/ConvTranspose/Gemm: their own bias (input 2, added when absent). MatMul: the constant
    ``[N]`` operand of the Add right after it (the exporter's bias), if that Add is its only consumer.
    """
    g = model.graph
    prod, cons, index = producers(g), consumers(g), GraphIndex(g)
    out: dict[str, tuple[onnx.NodeProto, int, int]] = {}
    skipped: dict[str, str] = {}
    for n in g.node:
        if n.op_type not in (*BIAS_OPS, "MatMul") or not _quantized(n, prod):
            continue
        if n.op_type in BIAS_OPS:
            if len(n.input) > 2 and n.input[2] and index.array(n.input[2]) is None:
                skipped[n.name] = "bias is not a constant"
                continue
            out[n.output[0]] = (n, 2, BIAS_OPS[n.op_type])
            continue
        users = cons.get(n.output[0], [])
        add = users[0] if len(users) == 1 and users[0].op_type == "Add" else None
        k = next((i for i, t in enumerate(add.input) if t != n.output[0] and index.array(t) is not None),
                 None) if add else None
        if add is None or k is None or index.array(add.input[k]).ndim != 1:
            skipped[n.name] = "MatMul without a constant [N] bias Add after it"
            continue
        out[n.output[0]] = (add, k, -1)
    return out, skipped


def _add_to_bias(model: onnx.ModelProto, node: onnx.NodeProto, k: int, shift: np.ndarray, names: NameGen) -> None:
    """``bias += shift`` in a fresh initializer (a shared bias is never changed for another node)."""
    g = model.graph
    old = GraphIndex(g).array(node.input[k]) if len(node.input) > k and node.input[k] else None
    base = np.zeros(shift.shape, np.float32) if old is None else old
    new = numpy_helper.from_array((base.astype(np.float64) + shift).astype(base.dtype),
                                  names(f"{node.name or node.output[0]}_bias_corrected"))
    g.initializer.append(new)
    while len(node.input) <= k:
        node.input.append("")
    node.input[k] = new.name


def _feedable(qdq: onnx.ModelProto, targets: Mapping[str, tuple[onnx.NodeProto, int, int]],
              ref: Mapping[str, np.ndarray]) -> tuple[onnx.ModelProto, dict[str, str], dict[str, np.ndarray]]:
    """A copy of ``qdq`` whose corrected biases are graph inputs: (model, tensor -> input name, start values)."""
    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    index, names = GraphIndex(m.graph), NameGen(m.graph)
    nodes = {n.output[0]: n for n in m.graph.node if n.output}
    feed_of, start = {}, {}
    for t, (node, k, _) in targets.items():
        holder = nodes[node.output[0]]
        old = index.array(holder.input[k]) if len(holder.input) > k and holder.input[k] else None
        start[t] = (np.zeros(ref[t].shape, np.float32) if old is None else old).astype(np.float32)
        feed_of[t] = names(f"{holder.name or holder.output[0]}_bias_input")
        while len(holder.input) <= k:
            holder.input.append("")
        holder.input[k] = feed_of[t]
        m.graph.input.append(onnx.helper.make_tensor_value_info(feed_of[t], onnx.TensorProto.FLOAT,
                                                                list(start[t].shape)))
    return m, feed_of, start


def correct_biases(qdq: onnx.ModelProto, fp32: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                   steps: int = 0, batch_size: int = 16, static: Collection[str] = ()) -> BiasCorrection:
    """Shift the biases of ``qdq``'s INT8 layers (in place) so their mean outputs match ``fp32`` on ``inputs``.

    One ONNX Runtime session of ``qdq`` serves every step: the biases being corrected are fed as
    graph inputs, and a step fetches only its layers' outputs (ONNX Runtime runs only the nodes
    they need), so the layer-by-layer order costs about one model run per layer on ``inputs``.

    Args:
        qdq: The Q/DQ model (modified in place; unused bias initializers are left for the caller's cleanup).
        fp32: The FP32 graph it was made from, with the same tensor names (the prepared model).
        inputs: Calibration inputs by name, samples on axis 0.
        steps: Groups of layers corrected one after the other (0 or more than the layers: one per layer,
            Nagel's order; fewer groups are faster but each group overcorrects the layers after its first).
        batch_size: Samples per ONNX Runtime call.
        static: Inputs that are per-call constants.

    Returns:
        The per-layer changes.

    Raises:
        InputError: ONNX Runtime refused a model or the inputs.
    """
    targets, skipped = _targets(qdq)
    if not targets:
        return BiasCorrection(skipped=skipped)
    axes = {t: ax for t, (_, _, ax) in targets.items()}
    ref = channel_means(fp32, axes, inputs, batch_size, static, "the FP32 model on the calibration data")
    feedable, feed_of, bias = _feedable(qdq, targets, ref)
    measure = LayerMeans(feedable, axes, (*static, *feed_of.values()))
    order = list(targets)  # graph order is topological
    steps = len(order) if steps <= 0 else min(steps, len(order))
    total: dict[str, np.ndarray] = {}
    for group in np.array_split(np.arange(len(order)), steps):
        todo = [order[i] for i in group]
        got = measure(inputs, todo, {feed_of[t]: b for t, b in bias.items()}, batch_size,
                      "the INT8 model on the calibration data")
        for t in todo:
            total[t] = ref[t] - got[t]
            bias[t] = (bias[t].astype(np.float64) + total[t]).astype(np.float32)
    names = NameGen(qdq.graph)
    layer_of = {o: n.name or o for n in qdq.graph.node for o in n.output[:1]}
    for t, (node, k, _) in targets.items():
        _add_to_bias(qdq, node, k, total[t], names)
    changed = {layer_of[t]: float(np.max(np.abs(s))) for t, s in total.items()}
    return BiasCorrection(corrected=changed, skipped=skipped, steps=steps, shifts=total)

