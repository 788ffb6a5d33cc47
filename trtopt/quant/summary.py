"""What ``quantize_qdq`` did, in one place: the no-op error message and the Q/DQ summary.

An INT8 model without a single Q/DQ node is never written: :func:`nothing_quantized`
builds the one-line reason. ``quantize_qdq`` returns a :class:`QdqSummary` (Q/DQ pairs, layers in
INT8, layers kept in float and why, preparation notes) that ``trtopt quantize`` prints; the same
facts are written into the model as a JSON metadata entry, provenance for whoever reads the saved
file later (``trtopt inspect``, a benchmark), never read back by trtopt within one call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import onnx

from trtopt.calib.table import CalibrationTable
from trtopt.log import get_logger
from trtopt.onnx.walk import describe_subgraph_ops, subgraph_op_counts

log = get_logger(__name__)

#: ``metadata_props`` key of the summary written into a quantized model (provenance of a saved file).
SUMMARY_KEY = "trtopt.int8.summary"


@dataclass(frozen=True)
class QdqSummary:
    """What Q/DQ insertion did.

    Attributes:
        qdq_pairs: QuantizeLinear nodes.
        dequantize_nodes: DequantizeLinear nodes.
        int8_nodes: Weighted nodes with Q/DQ inputs.
        kept_float: Node -> why it stays in float (user exclusions, no range, the guard, ...).
        notes: Preparation steps applied (:func:`trtopt.prepare.prepare_model`).
    """

    qdq_pairs: int
    dequantize_nodes: int
    int8_nodes: int
    kept_float: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def relabeled(self, reasons: dict[str, str]) -> QdqSummary:
        """This summary with new reasons for nodes it already keeps in float (e.g. kept by the guard)."""
        kept = {n: reasons.get(n, w) for n, w in self.kept_float.items()}
        return replace(self, kept_float=kept)

    def as_dict(self) -> dict:
        """JSON-friendly form (the metadata entry's content)."""
        return {"qdq_pairs": self.qdq_pairs, "dequantize_nodes": self.dequantize_nodes,
                "int8_nodes": self.int8_nodes, "kept_float": dict(self.kept_float), "notes": list(self.notes)}


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


def store_summary(m: onnx.ModelProto, quantized: set[str], kept: dict[str, str], notes: list[str]) -> QdqSummary:
    """Log the Q/DQ summary of ``m``, write it as its :data:`SUMMARY_KEY` metadata entry and return it.

    The JSON entry holds the :class:`QdqSummary` fields (:meth:`QdqSummary.as_dict`).
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
    summary = QdqSummary(pairs, dqs, len(quantized), dict(kept), tuple(notes))
    write_summary(m, summary)
    return summary


def write_summary(m: onnx.ModelProto, summary: QdqSummary) -> None:
    """Write ``summary`` into ``m`` as its :data:`SUMMARY_KEY` metadata entry (replacing an older one)."""
    for p in list(m.metadata_props):
        if p.key == SUMMARY_KEY:
            m.metadata_props.remove(p)
    m.metadata_props.append(onnx.StringStringEntryProto(key=SUMMARY_KEY, value=json.dumps(summary.as_dict())))
