"""What ``quantize_qdq`` did, in one place: the no-op error message and the stored summary.

An INT8 model without a single Q/DQ node is never written: :func:`nothing_quantized`
builds the one-line reason. Every quantized model carries a JSON summary (Q/DQ pairs, layers in
INT8, layers kept in float and why, preparation notes) that ``trtopt quantize`` prints.
"""

from __future__ import annotations

import json

import onnx

from trtopt.calib.table import CalibrationTable
from trtopt.log import get_logger
from trtopt.onnx.walk import describe_subgraph_ops, subgraph_op_counts

log = get_logger(__name__)

#: ``metadata_props`` key of the summary.
SUMMARY_KEY = "trtopt.int8.summary"


def nothing_quantized(g: onnx.GraphProto, op_types: tuple[str, ...], kept: dict[str, str],
                      table: CalibrationTable) -> str:
    """One line saying why no Q/DQ pair was inserted (the message of the InputError ``quantize`` raises).

    Args:
        g: The (prepared) graph.
        op_types: Quantizable op types.
        kept: Node name -> why it stayed in float (``"excluded"`` for user exclusions).
        table: The calibration table used.
    """
    ops = "/".join(op_types)
    if not kept:
        counts = subgraph_op_counts(g)
        inside = f" (inside control flow: {describe_subgraph_ops(counts)})" if counts else ""
        return f"nothing to quantize: the model has no top-level {ops} node{inside}"
    excluded = sum(1 for w in kept.values() if w == "excluded")
    no_range = [w for w in kept.values() if w.startswith("no calibrated range")]
    parts = []
    if excluded:
        parts.append(f"{excluded} excluded by --exclude/--exclude-op-type")
    if no_range:
        first = next(n for n, w in kept.items() if w.startswith("no calibrated range"))
        tensor = kept[first].rsplit(" ", 1)[-1]
        empty = " (the calibration table is empty)" if not table.amax else ""
        parts.append(f"{len(no_range)} without a calibrated range{empty}, e.g. {tensor} of '{first}'")
    rest = [f"'{n}': {w}" for n, w in kept.items() if w != "excluded" and not w.startswith("no calibrated")]
    if rest:
        parts.append(f"{len(rest)} other ({rest[0]})")
    fix = "; re-run `trtopt calibrate` on this model" if no_range else ""
    return f"no Q/DQ inserted: none of the {len(kept)} {ops} node(s) can be quantized ({', '.join(parts)}){fix}"


def store_summary(m: onnx.ModelProto, quantized: set[str], kept: dict[str, str], notes: list[str]) -> None:
    """Log the Q/DQ summary and store it in ``m`` as the :data:`SUMMARY_KEY` metadata entry.

    The JSON object holds ``qdq_pairs`` (QuantizeLinear nodes), ``dequantize_nodes``, ``int8_nodes``
    (weighted ops with Q/DQ inputs), ``kept_float`` (node -> why it stays in float) and ``notes``
    (the preparation steps applied, see :func:`trtopt.prepare.prepare_model`).
    """
    pairs = sum(1 for n in m.graph.node if n.op_type == "QuantizeLinear")
    dqs = sum(1 for n in m.graph.node if n.op_type == "DequantizeLinear")
    log.info("quantized %d nodes with Q/DQ (%d Q/DQ pairs, %d DequantizeLinear)", len(quantized), pairs, dqs)
    no_range = [n for n, w in kept.items() if w.startswith("no calibrated range")]
    if no_range:
        log.warning("%d node(s) left in float without a calibrated range for their activation input (e.g. %s: %s)",
                    len(no_range), no_range[0], kept[no_range[0]])
    for n, w in kept.items():
        if w != "excluded" and n not in no_range:
            log.info("left in float: %s (%s)", n, w)
    summary = {"qdq_pairs": pairs, "dequantize_nodes": dqs, "int8_nodes": len(quantized),
               "kept_float": kept, "notes": notes}
    for p in list(m.metadata_props):
        if p.key == SUMMARY_KEY:
            m.metadata_props.remove(p)
    m.metadata_props.append(onnx.StringStringEntryProto(key=SUMMARY_KEY, value=json.dumps(summary)))


def read_summary(m: onnx.ModelProto) -> dict | None:
    """The summary :func:`store_summary` stored in ``m``, or ``None``."""
    raw = next((p.value for p in m.metadata_props if p.key == SUMMARY_KEY), None)
    return None if raw is None else json.loads(raw)
