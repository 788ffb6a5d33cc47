"""Constants for FP16: range checks and additive-mask clamping (used by :mod:`trtopt.quant.fp16`).

Every float constant of the top graph -- initializers and ``Constant`` nodes in all their forms,
found by :func:`trtopt.onnx.constants.iter_constants` -- is checked against FP16's range. Out-of-range
constants keep their consumers in FP32, except additive attention masks, which are clamped to
:data:`MASK_FILL` where that is exact in effect (see :func:`mask_constants`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto

from trtopt.onnx.constants import ConstantRef, iter_constants
from trtopt.onnx.graph import consumers

F32 = TensorProto.FLOAT

#: Value an additive mask's out-of-range entries are clamped to (2**15, exact in FP16). Exact in
#: effect: softmax(x + m) gives a masked position weight exp(m - max) = 0 in FP16 for m = -3.4e38 and
#: for m = -32768 alike, and x + m stays finite (no -inf, so no NaN for a fully masked row) for any
#: FP16 score |x| <= 32736. Clamping to -65504 instead would overflow for every negative score.
MASK_FILL = -32768.0
#: Ops a mask may pass through on its way to Softmax: op -> input positions the mask may occupy.
#: Each keeps the mask's "very negative means excluded" meaning (adds, selects or moves values).
_MASK_PASS = {"Add": (0, 1), "Sub": (0,), "Where": (1, 2), "Min": (0, 1, 2, 3), "Expand": (0,), "Reshape": (0,),
              "Unsqueeze": (0,), "Squeeze": (0,), "Transpose": (0,), "Identity": (0,), "Tile": (0,),
              "Slice": (0,), "Gather": (0,), "Concat": tuple(range(64)), "Cast": (0,)}
_MASK_SINKS = {"Softmax", "LogSoftmax"}


def _abs_stats(a: np.ndarray, block: int = 1 << 22) -> tuple[bool, float, float]:
    """``(any NaN, max |a|, max a)`` of a non-empty array, read in blocks of ``block`` elements.

    Floats are reduced in their own type (abs and max are exact, so the figures equal float64's),
    so a 1 GB float32 weight needs no 2 GB float64 copy and no full-size ``abs`` temporary.
    """
    flat = np.asarray(a).reshape(-1)
    if flat.dtype.kind != "f":
        flat = flat.astype(np.float64)
    nan, peak, top = False, 0.0, -float("inf")
    for i in range(0, flat.size, block):
        c = flat[i:i + block]
        if np.isnan(c).any():
            nan = True
            continue
        peak, top = max(peak, float(np.abs(c).max())), max(top, float(c.max()))
    return nan, peak, top


def max_abs_or_inf(a: np.ndarray) -> float:
    """Max |a| with NaN counted as infinite (a NaN weight is as broken in FP16 as an overflowing one)."""
    if not np.size(a):
        return 0.0
    nan, peak, _ = _abs_stats(a)
    return float("inf") if nan else peak


def mask_constants(model: onnx.ModelProto, init_max: float = 65504.0) -> dict[str, float]:
    """Top-level FP32 constants beyond FP16 range that are clampable additive attention masks.

    A constant qualifies when (1) every value above ``-init_max`` is within FP16 range (only very
    negative entries such as ``finfo(float32).min`` or ``-inf`` overflow), and (2) every path from it
    reaches a Softmax/LogSoftmax through :data:`_MASK_PASS` ops in mask positions only (e.g. Add, Where
    branches, Reshape), never a graph output. Its entries below :data:`MASK_FILL` are then clamped to
    ``MASK_FILL``, which leaves the softmax unchanged (see :data:`MASK_FILL`).

    Returns:
        ``{constant name: fill value}``.
    """
    g = model.graph
    cons = consumers(g)
    outputs = {o.name for o in g.output}
    found: dict[str, float] = {}
    for c in iter_constants(model):
        if c.graph_path or c.data_type != F32:
            continue
        if not np.size(c.array):
            continue
        nan, peak, top = _abs_stats(c.array)
        c.release()  # decoded once per constant, not kept (a multi-GB weight)
        if nan or peak <= init_max:
            continue
        if top > init_max:  # only very negative entries may overflow in a mask
            continue
        if _reaches_softmax(c.name, cons, outputs):
            found[c.name] = MASK_FILL
    return found


def _reaches_softmax(name: str, cons: Mapping[str, list[onnx.NodeProto]], outputs: set[str], depth: int = 12) -> bool:
    """Every use of ``name`` passes through mask-preserving ops to a Softmax (bounded walk)."""
    if depth == 0 or name in outputs or not cons.get(name):
        return False
    for n in cons[name]:
        if n.op_type in _MASK_SINKS and list(n.input).index(name) == 0:
            continue
        pos = _MASK_PASS.get(n.op_type)
        if pos is None or any(i == name and k not in pos for k, i in enumerate(n.input)):
            return False
        if not all(_reaches_softmax(o, cons, outputs, depth - 1) for o in n.output if o):
            return False
    return True


def top_constants(model: onnx.ModelProto) -> dict[str, ConstantRef]:
    """Top-level float constants (initializers and Constant nodes) by tensor name."""
    return {c.name: c for c in iter_constants(model) if not c.graph_path and c.is_float
            and c.kind != "sparse_initializer"}
