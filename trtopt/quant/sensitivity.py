"""Per-layer INT8 sensitivity, shared by the fidelity guard and the accuracy budget.

Both ask the same question: which quantized layers hurt the most? Two rankings answer it:

* ``"local"`` (:func:`local_sensitivity`, the default): one ONNX Runtime session runs the FP32 graph
  and, beside every quantized layer, a copy of that layer reading its Q/DQ inputs, on the same
  recorded FP32 inputs; a layer's score is the normalised squared error of its own output,
  ``|y_int8 - y|^2 / |y|^2`` (1 / SQNR). One run for all L layers: the per-layer SQNR analysis of
  Nagel et al., "A White Paper on Neural Network Quantization" (2021, sec. 4.8, debugging), with
  the layer alone quantized on its FP32 inputs;
* ``"model"`` (:func:`model_sensitivity`): each layer quantized alone (every other one left in float),
  the whole model run, its outputs compared with FP32 by :func:`output_error` (L quantizations and
  L sessions: NNCF's accuracy-aware ranking).

:mod:`trtopt.quant.search` then keeps layers in float worst first until the caller's judge passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

import numpy as np
import onnx

from trtopt.batching import rule_for_onnx
from trtopt.calib.table import CalibrationTable
from trtopt.onnx.dims import with_symbolic_dims
from trtopt.onnx.exec import exposed_bytes, make_session, run_session
from trtopt.quant.config import QuantizeConfig
from trtopt.quant.qdq import PreparedModel, qdq_nodes_for, quantize_qdq

#: Suffix of the INT8 copy of a layer's output in :func:`local_sensitivity`'s graph.
_INT8 = "::int8"


def output_error(outs: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Sum over outputs of the normalised squared error ``|y - ref|^2 / |ref|^2`` (continuous: no ties)."""
    return float(sum(np.sum((y.astype(np.float64) - r) ** 2) / max(float(np.sum(r.astype(np.float64) ** 2)), 1e-12)
                     for y, r in zip(outs, ref)))


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes of a Q/DQ model whose activation input comes from a DequantizeLinear."""
    return [n for n, srcs in qdq_nodes_for(model).items() if srcs and srcs[0] == "DequantizeLinear"]


def only(layers: list[str], keep: str) -> tuple[str, ...]:
    """Exclusion patterns that leave only ``keep`` of ``layers`` quantized."""
    return tuple(f"^{re.escape(n)}$" for n in layers if n != keep)


def exactly(names: list[str]) -> tuple[str, ...]:
    """Exclusion patterns matching exactly ``names``."""
    return tuple(f"^{re.escape(n)}$" for n in names)


def keeping(cfg: QuantizeConfig, names: list[str]) -> QuantizeConfig:
    """``cfg`` that also keeps ``names`` in float."""
    return replace(cfg, exclude_nodes=cfg.exclude_nodes + exactly(names))


def _worst_first(sens: dict[str, float]) -> dict[str, float]:
    return {k: sens[k] for k in sorted(sens, key=lambda k: -sens[k])}  # stable: ties keep the graph order


def model_sensitivity(model: onnx.ModelProto | PreparedModel, table: CalibrationTable, cfg: QuantizeConfig,
                      layers: list[str], error: Callable[[onnx.ModelProto], float],
                      say: Callable[[int, str], None] | None = None) -> dict[str, float]:
    """Each of ``layers`` quantized alone, the whole model scored by ``error`` (higher: more sensitive), worst first.

    Args:
        model: The FP32 model (prepared once: :func:`trtopt.quant.qdq.prepare_for_qdq`).
        table: Its calibration table.
        cfg: Q/DQ options (its exclusions stay excluded).
        layers: The layers the all-INT8 model quantizes (:func:`quantized_layers`).
        error: The model with one INT8 layer -> its error against FP32 (e.g. :func:`output_error`).
        say: Optional ``callback(k, layer)`` before the k-th (1-based) layer is measured.

    Returns:
        Layer -> error, most sensitive first (ties keep the graph order).
    """
    sens = {}
    for k, name in enumerate(layers, 1):
        if say is not None:
            say(k, name)
        alone = replace(cfg, exclude_nodes=cfg.exclude_nodes + only(layers, name))
        sens[name] = error(quantize_qdq(model, table, alone).model)
    return _worst_first(sens)


def side_by_side(qdq: onnx.ModelProto, layers: Collection[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The FP32 graph of ``qdq`` with an INT8 copy of every layer of ``layers`` beside it.

    Every Q->DQ pair is bypassed on the main path (its consumers read the float tensor again: the
    FP32 model), and each layer gets a copy that reads the pair's output, so it sees its own Q/DQ
    inputs on exactly the FP32 inputs of the layer. Returns the model and layer -> the name of its
    first output (the INT8 copy's output is that name + ``"::int8"``).
    """
    g = qdq.graph
    prod = {o: n for n in g.node for o in n.output}
    orig = {n.output[0]: prod[n.input[0]].input[0] for n in g.node if n.op_type == "DequantizeLinear"
            and n.input[0] in prod and prod[n.input[0]].op_type == "QuantizeLinear"}
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    del out.graph.node[:]
    copies, names = [], {}
    for n in g.node:
        f = onnx.NodeProto()
        f.CopyFrom(n)
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            for i, t in enumerate(f.input):
                f.input[i] = orig.get(t, t)
        out.graph.node.append(f)
        if n.name in layers:
            q = onnx.NodeProto()
            q.CopyFrom(n)
            q.name = n.name + _INT8
            for i, t in enumerate(q.output):
                q.output[i] = t + _INT8 if t else t
            copies.append(q)
            names[n.name] = n.output[0]
    out.graph.node.extend(copies)
    return out, names


def local_sensitivity(qdq: onnx.ModelProto, layers: list[str], inputs: Mapping[str, np.ndarray], batch_size: int,
                      static: Collection[str] = ()) -> dict[str, float]:
    """Each of ``layers`` scored by the normalised squared error of its own output under its Q/DQ inputs.

    One ONNX Runtime session on :func:`side_by_side`'s graph, run once over ``inputs`` (calls of
    ``batch_size`` samples, :mod:`trtopt.batching`); the error sums ``|y_int8 - y|^2`` and ``|y|^2``
    over all samples (float64) before dividing.

    Args:
        qdq: A Q/DQ model (weights float behind their Q->DQ pairs) quantizing ``layers``.
        layers: The layers to score (:func:`quantized_layers`).
        inputs: Input name -> array, samples on axis 0.
        batch_size: Samples per call (the model's fixed batch size wins).
        static: Inputs of ``inputs`` that are per-call constants.

    Returns:
        Layer -> error, most sensitive first (ties keep the graph order).

    Raises:
        InputError: ONNX Runtime refused the inputs (one line).
    """
    model, outs = side_by_side(qdq, set(layers))
    model = with_symbolic_dims(model)
    wanted = [t for n in layers for t in (outs[n], outs[n] + _INT8)]
    sess = make_session(exposed_bytes(model, wanted))
    rule = rule_for_onnx(model, static)

    def call(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = dict(zip(wanted, run_session(sess, wanted, feed, "the model with INT8 layer copies")))
        size = len(next(v for k, v in feed.items() if k not in static))
        res = {}
        for n in layers:
            y, q = got[outs[n]].astype(np.float64), got[outs[n] + _INT8].astype(np.float64)
            per = y.ndim > 0 and y.shape[0] == size
            err, ref = (q - y) ** 2, y ** 2
            res["e:" + n] = err.reshape(size, -1).sum(1) if per else np.full(size, err.sum() / size)
            res["r:" + n] = ref.reshape(size, -1).sum(1) if per else np.full(size, ref.sum() / size)
        return res

    sums = rule.run(call, inputs, batch_size)
    return _worst_first({n: float(sums["e:" + n].sum() / max(float(sums["r:" + n].sum()), 1e-30)) for n in layers})
