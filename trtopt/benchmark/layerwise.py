"""Layer-wise comparison of an FP32 ONNX model with its quantized / FP16 variant.

Both models run in ONNX Runtime (graph optimizations off, so node outputs keep their names)
with every intermediate tensor exposed as an extra output. Layers are matched by the
*producing node's name*, because a Q/DQ or FP16 model renames tensors but keeps node names
(Q/DQ/Cast nodes themselves are skipped). Per matched layer: SQNR, cosine and absolute errors
of its output against FP32, plus ``local_sqnr_db``: the SQNR of the noise this layer *adds*
rather than inherits. With noise-to-signal ratios ``NSR = 10**(-SQNR/10)``, the added share is
``NSR(output) - max NSR(inputs)`` (graph inputs are exact), reported back in dB. Ranking by it
points at the layer to keep in higher precision; ranking by SQNR alone would always blame the
last layers, where error has accumulated.

Node names of the legacy PyTorch exporter encode module paths (``/features/0/Conv``,
``/layer1/layer1.0/conv1/Conv``); :func:`trtopt.onnx.graph.module_name` maps them back to ``features.0`` and
``layer1.0.conv1``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trtopt.benchmark.accuracy import fidelity
from trtopt.errors import InputError
from trtopt.onnx.graph import module_name

#: nodes that only move precision; their outputs are not layers
SKIP_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast", "Identity"})


@dataclass(frozen=True)
class LayerError:
    """Error of one layer's output against FP32.

    Attributes:
        node: Node name (shared by both models).
        module: PyTorch module path, when the name encodes one.
        op_type: ONNX op type.
        output: FP32 tensor name compared.
        sqnr_db: SQNR of the layer output (``inf`` when identical).
        local_sqnr_db: SQNR of the noise added by this layer alone (``inf`` when it adds none).
        cosine: Cosine similarity.
        max_abs_err: Max absolute error.
        mean_abs_err: Mean absolute error.
    """

    node: str
    module: str | None
    op_type: str
    output: str
    sqnr_db: float
    local_sqnr_db: float
    cosine: float
    max_abs_err: float
    mean_abs_err: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``inf`` as a string)."""
        from trtopt.benchmark.report import jsonable

        return jsonable(asdict(self))


def _layer_outputs(model: Any) -> dict[str, tuple[str, str, list[str]]]:
    """Node key -> (first float output, op type, input tensors), skipping precision-only nodes."""
    out = {}
    for i, n in enumerate(model.graph.node):
        if n.op_type in SKIP_OPS or not n.output or not n.output[0]:
            continue
        key = n.name or f"#{n.output[0]}"
        out[key if key not in out else f"{key}#{i}"] = (n.output[0], n.op_type, list(n.input))
    return out


def _exposed_session(model: Any, names: list[str]):
    import onnx

    from trtopt.onnx.exec import exposed_bytes, make_session

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:  # shape inference is best effort; unknown types default to float
        types = {}
    return make_session(exposed_bytes(model, names, {n: types.get(n) or onnx.TensorProto.FLOAT for n in names}),
                        optimize=False)


def _run_all(model: Any, names: list[str], feeds: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Every tensor of ``names`` over all samples of ``feeds``; calls follow :mod:`trtopt.batching`."""
    from trtopt.batching import rule_for_onnx
    from trtopt.onnx.exec import run_session

    sess = _exposed_session(model, names)
    return rule_for_onnx(model).run(lambda feed: dict(zip(names, run_session(sess, names, feed, what))), feeds, 0)


def compare_layers(reference: str | os.PathLike[str] | Any, candidate: str | os.PathLike[str] | Any,
                   feeds: Mapping[str, np.ndarray], rank_by: str = "local_sqnr_db") -> list[LayerError]:
    """Compare every matched layer of ``candidate`` with ``reference`` on ``feeds``.

    Args:
        reference: FP32 ONNX model (path or ModelProto).
        candidate: Quantized / FP16 model of the same network.
        feeds: Input name to array (a few samples suffice).
        rank_by: ``local_sqnr_db`` (error added by the layer) or ``sqnr_db`` (accumulated); lowest first.

    Returns:
        Layer errors, worst first.

    Raises:
        InputError: No layer could be matched, or a model cannot run.
    """
    from trtopt.onnx.io import load_onnx

    ref = reference if hasattr(reference, "graph") else load_onnx(reference, check=False)
    cand = candidate if hasattr(candidate, "graph") else load_onnx(candidate, check=False)
    lr, lc = _layer_outputs(ref), _layer_outputs(cand)
    keys = [k for k in lr if k in lc]
    if not keys:
        raise InputError("no layer of the candidate matches the reference by node name (different exports?)")
    vr = _run_all(ref, [lr[k][0] for k in keys], feeds, "the reference model (layer-wise)")
    vc = _run_all(cand, [lc[k][0] for k in keys], feeds, "the candidate model (layer-wise)")
    producer = {lr[k][0]: k for k in keys}
    nsr: dict[str, float] = {}
    layers = []
    for k in keys:  # graph order: inputs' SQNRs are known before a node's
        out_r, op, inputs = lr[k]
        a, b = vr[out_r], vc[lc[k][0]]
        if a.shape != b.shape or not np.issubdtype(np.asarray(a).dtype, np.floating):
            continue
        f = fidelity(a, b)
        s = f["sqnr_db"]
        nsr[k] = 10 ** (-s / 10) if math.isfinite(s) else (0.0 if s > 0 else math.inf)
        inherited = max((nsr[producer[t]] for t in inputs if t in producer and producer[t] in nsr), default=0.0)
        added = nsr[k] - inherited
        local = -10 * math.log10(added) if 0 < added < math.inf else (math.inf if added <= 0 else -math.inf)
        layers.append(LayerError(k, module_name(k), op, out_r, s, local, f["cosine"], f["max_abs_err"],
                                 f["mean_abs_err"]))
    if rank_by not in ("local_sqnr_db", "sqnr_db"):
        raise InputError(f"rank_by must be local_sqnr_db or sqnr_db, got '{rank_by}'")
    return sorted(layers, key=lambda e: (getattr(e, rank_by), e.sqnr_db))


def format_layers(layers: list[LayerError], top: int = 10) -> list[list[str]]:
    """Rows (strings) for the ``top`` worst layers: node, module, op, SQNR, local SQNR, cosine, max err."""
    def f(x: float, d: int = 1) -> str:
        return "inf" if math.isinf(x) else f"{x:.{d}f}"

    return [[e.node, e.module or "—", e.op_type, f(e.sqnr_db), f(e.local_sqnr_db), f(e.cosine, 6),
             f(e.max_abs_err, 5)] for e in layers[:top]]
