"""FP16 overflow preview: where an FP16 graph overflows on real data when computed as a GPU computes it.

ONNX Runtime's CPU provider runs most float16 ops as float32 kernels wrapped in Casts and removes
back-to-back Casts, and its float16 reductions accumulate in float32. An FP16 graph that overflows
on a GPU can therefore score a perfect cosine on the CPU: the overflow exists only in FP16
arithmetic. This module finds it without a GPU, bounded to a few samples:

1. The FP16 model runs once in ONNX Runtime (graph optimizations off) with every float16 tensor of
   the top graph exposed as an output. A float16 tensor must then be materialized, so a value that
   does not fit float16 shows up as inf there even where the CPU kernel computed in float32.
2. Per node in graph order:

   * **output overflow**: a float16 output holds inf/NaN although every float input is finite (the
     node where it first appears; later nodes only propagate it);
   * **accumulation overflow**: for reductions executed in float16 (ReduceSum/Mean/SumSquare/L1/L2/
     LogSum, GlobalAveragePool) the float64 sum that an FP16 accumulator would have to hold --
     ``sum(x)``, ``sum(x^2)`` or ``sum(|x|)`` over the reduced axes -- exceeds 65504. A mean that
     fits FP16 can hide a sum that does not (e.g. a square re-entering FP16 before ReduceMean).

The largest magnitude quoted for an output overflow comes from the FP32 reference model on the
same samples when one is given (tensor names are shared), else it is reported as ``inf``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from trtopt.log import get_logger
from trtopt.onnx.exec import exposed_bytes, make_session, run_session
from trtopt.onnx.graph import float_tensor_types, get_attr, initializer_array

log = get_logger(__name__)
FP16_MAX = 65504.0
F16 = onnx.TensorProto.FLOAT16
#: Reductions whose FP16 accumulator holds sum(f(x)) over the reduced axes: op -> f.
_ACCUMULATE = {"ReduceSum": "x", "ReduceMean": "x", "ReduceSumSquare": "x2", "ReduceL2": "x2", "ReduceL1": "abs",
               "ReduceLogSum": "x", "GlobalAveragePool": "x"}


@dataclass(frozen=True)
class Overflow:
    """One place where FP16 arithmetic overflows.

    Attributes:
        node: Node name in the FP16 model.
        op_type: Its op type.
        tensor: The overflowing output (or the reduced input for accumulations).
        kind: ``output`` (inf/NaN output from finite inputs) or ``accumulation`` (reduction sum > 65504).
            An FP16 graph input whose data exceeds 65504 is reported as node ``graph input``.
        max_abs: Largest magnitude the FP16 value would need (``inf`` when unknown).
        consumers: For an overflowing Cast inserted by the converter: the nodes reading its output.
    """

    node: str
    op_type: str
    tensor: str
    kind: str
    max_abs: float
    consumers: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = "output" if self.kind == "output" else "accumulated sum of its input"
        return (f"node {self.node} ({self.op_type}) {what} '{self.tensor}' overflows FP16 "
                f"(max |x| = {self.max_abs:.3g} > {FP16_MAX:g})")


def _run_all(model: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` on CPU ONNX Runtime returning ``names`` (added as outputs; optimizations off)."""
    sess = make_session(exposed_bytes(model, names), optimize=False)
    out_names = [o.name for o in sess.get_outputs()]
    inputs = {i.name: i.type for i in sess.get_inputs()}
    cast = {"tensor(float16)": np.float16, "tensor(float)": np.float32}
    with np.errstate(over="ignore"):  # data beyond FP16 for an FP16 input: reported by the caller
        typed = {k: np.asarray(v).astype(cast.get(inputs[k], np.asarray(v).dtype))
                 for k, v in feeds.items() if k in inputs}
    vals = run_session(sess, out_names, typed, "the FP16 model (overflow preview)")
    return dict(zip(out_names, vals))


def _axes(node: onnx.NodeProto, graph: onnx.GraphProto, vals: Mapping[str, np.ndarray], rank: int
          ) -> tuple[int, ...] | None:
    """Reduced axes of a reduction node, ``None`` when it reduces nothing (noop_with_empty_axes)."""
    if node.op_type == "GlobalAveragePool":
        return tuple(range(2, rank))
    axes = get_attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        arr = vals.get(node.input[1])
        arr = initializer_array(graph, node.input[1]) if arr is None else arr
        axes = None if arr is None else [int(a) for a in np.asarray(arr).reshape(-1)]
    if not axes:
        return None if get_attr(node, "noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(int(a) % rank for a in axes)


def fp16_overflows(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                   reference: onnx.ModelProto | None = None, max_samples: int = 4,
                   static: Collection[str] = ()) -> list[Overflow]:
    """Find the nodes of an FP16 model whose FP16 arithmetic overflows on ``feeds`` (see module doc).

    Args:
        model: The converted (mixed-precision) model.
        feeds: One batch of inputs by name; only its first ``max_samples`` samples are used, in one call
            (a model with a fixed batch size gets exactly that many: :mod:`trtopt.batching`).
        reference: The FP32 model, to quote the magnitude an overflowing output would need.
        max_samples: Bound on samples run (memory: every float16 activation of the batch is held).
        static: Inputs of ``feeds`` that are per-call constants (not samples on axis 0).

    Returns:
        Overflows in graph order (first appearance only); empty when FP16 is safe on this data.
    """
    g = model.graph
    from trtopt.batching import rule_for_onnx

    batch, _ = next(rule_for_onnx(model, static).calls(feeds, max_samples))  # one call: every tensor is held
    types = float_tensor_types(model)
    f16 = [o for n in g.node for o in n.output if o and types.get(o) == F16 and n.op_type != "Constant"]
    axes_inputs = [n.input[1] for n in g.node if n.op_type in _ACCUMULATE and len(n.input) > 1 and n.input[1]]
    vals = _run_all(model, list(dict.fromkeys(f16 + axes_inputs)), batch)
    vals.update({k: v for k, v in batch.items()})
    ref_vals: dict[str, np.ndarray] = {}
    consumers: dict[str, list[str]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    found: list[Overflow] = []
    for vi in g.input:  # FP16 graph inputs: the data itself must fit
        v = batch.get(vi.name)
        if vi.type.tensor_type.elem_type == F16 and v is not None and np.issubdtype(np.asarray(v).dtype, np.floating):
            peak = float(np.abs(np.asarray(v, np.float64)).max()) if np.size(v) else 0.0
            if peak > FP16_MAX:
                found.append(Overflow("graph input", "Input", vi.name, "output", peak))
    for n in g.node:
        ins = [vals[i] for i in n.input if i in vals and np.issubdtype(vals[i].dtype, np.floating)]
        if any(not np.isfinite(a).all() for a in ins):
            continue  # propagated from an earlier node (or present in the data itself)
        if n.op_type in _ACCUMULATE and types.get(n.input[0]) == F16 and n.input[0] in vals:
            x = vals[n.input[0]].astype(np.float64)
            ax = _axes(n, g, vals, x.ndim)
            if ax is not None:
                f = _ACCUMULATE[n.op_type]
                s = np.abs((x * x if f == "x2" else np.abs(x) if f == "abs" else x).sum(axis=ax))
                peak = float(s.max()) if s.size else 0.0
                if peak > FP16_MAX:
                    found.append(Overflow(n.name, n.op_type, n.input[0], "accumulation", peak))
                    continue
        for o in n.output:
            v = vals.get(o)
            if v is None or v.dtype != np.float16 or np.isfinite(v).all():
                continue
            if reference is not None and not ref_vals:
                names = [t for t in f16 if t in {x for m in reference.graph.node for x in m.output}]
                ref_vals = _run_all(reference, names, batch) if names else {"": np.zeros(0)}
            peak = float("inf")
            src = n.input[0] if n.op_type == "Cast" else o
            if src in ref_vals and np.isfinite(ref_vals[src]).all():
                peak = float(np.abs(ref_vals[src]).max())
            elif n.op_type == "Cast" and n.input[0] in vals:
                peak = float(np.abs(vals[n.input[0]].astype(np.float64)).max())
            found.append(Overflow(n.name, n.op_type, o, "output", peak, tuple(consumers.get(o, ()))))
            break
    for f in found:
        log.warning("FP16 preview: %s", f)
    return found
