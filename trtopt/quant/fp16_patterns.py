"""What the FP16 converter keeps in FP32 (:func:`blocked_nodes`) and the graph patterns behind it.

:func:`blocked_nodes` applies the block lists, the constant range rule, the data rule and these
patterns to the top graph and every If/Loop/Scan body (used by :mod:`trtopt.quant.fp16`):

* :func:`layernorm_pattern_nodes`: LayerNorm spelled out (ReduceMean -> Sub -> Pow -> ReduceMean ->
  Add -> Sqrt -> Div, and its affine Mul/Add).
* :func:`norm_chain_nodes`: every normalization by a root mean square or norm (RMSNorm, L2
  normalization, the variance half of LayerNorm): from the squaring of a value through its
  reduction and the eps/sqrt/reciprocal ops to the node that divides or scales the value by it.
  A square re-entering FP16 before the reduction is inf for |x| > 255.9 (and the sum of squares
  overflows an FP16 accumulator long before that), so in true FP16 arithmetic (a GPU, ONNX's
  ``ReferenceEvaluator``) the output is garbage, while ONNX Runtime's CPU, which computes many
  float16 ops in float32, still scores cosine 1.0. TensorRT itself warns about FP16 normalization.
* :func:`ort_transpose_hazards`: Transposes that ONNX Runtime's CPU provider cannot load in FP16.

Each pattern function takes one graph level (a subgraph too) and the constants visible there by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto

from trtopt.onnx.constants import ConstantRef, iter_constants
from trtopt.onnx.graph import consumers, get_attr, opset_of
from trtopt.onnx.walk import node_subgraphs
from trtopt.quant.config import FP16Config
from trtopt.quant.fp16_masks import mask_constants, max_abs_or_inf, top_constants

F32 = TensorProto.FLOAT

#: Ops whose output type is fixed by an attribute / that accept any input type: never converted.
FIXED_OPS = {"Cast", "CastLike", "Constant", "ConstantOfShape", "EyeLike", "Shape", "Size"}
_LN_OPS = {"Pow", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Reciprocal", "Sub"}
#: Reductions a normalization takes of a squared value.
_REDUCE = {"ReduceMean", "ReduceSum"}
#: Reductions that square (or square and root) their input themselves.
_SQUARE_REDUCE = {"ReduceSumSquare", "ReduceL2"}
#: Ops between the reduction and the normalizing Div/Mul: unary, or with a constant operand (eps, 1/N, exponent).
_STAT_UNARY = {"Sqrt", "Reciprocal", "Identity"}
_STAT_CONST = {"Add", "Sub", "Mul", "Div", "Max", "Clip", "Pow"}


def layernorm_pattern_nodes(graph: onnx.GraphProto, consts: Mapping[str, object] | None = None) -> set[str]:
    """Names of nodes forming decomposed LayerNorm subgraphs of ``graph`` (this level).

    Args:
        graph: One graph level.
        consts: Names of the constants visible there (default: the level's initializers).
    """
    cons = consumers(graph)
    inits = set(consts) if consts is not None else {t.name for t in graph.initializer}
    found: set[str] = set()
    for rm in graph.node:
        if rm.op_type != "ReduceMean":
            continue
        x = rm.input[0]
        subs = [c for c in cons.get(rm.output[0], []) if c.op_type == "Sub" and x in c.input]
        for sub in subs:
            # walk forward from Sub over LN-like ops (Pow, ReduceMean, Add, Sqrt, ...) until the
            # Div that normalises (x - mean); nothing past that Div except the affine Mul/Add
            group, frontier, div = {rm.name, sub.name}, [sub], None
            for _ in range(6):
                nxt = []
                for n in frontier:
                    for c in cons.get(n.output[0], []):
                        if c.op_type in _LN_OPS and c.name not in group:
                            group.add(c.name)
                            if c.op_type == "Div" and sub.output[0] in c.input:
                                div = c
                            else:
                                nxt.append(c)
                frontier = nxt
            if div is None:
                continue
            tail = div
            for op in ("Mul", "Add"):  # affine gamma / beta with constant operands
                nxt = [c for c in cons.get(tail.output[0], []) if c.op_type == op and any(i in inits for i in c.input)]
                if not nxt:
                    break
                tail = nxt[0]
                group.add(tail.name)
            found |= group
    return found


def _is_square(n: onnx.NodeProto, consts: Mapping[str, ConstantRef]) -> bool:
    if n.op_type == "Mul":
        return len(n.input) == 2 and n.input[0] == n.input[1]
    if n.op_type == "Pow" and len(n.input) == 2 and n.input[1] in consts:
        e = np.asarray(consts[n.input[1]].array, np.float64)
        return e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return False


def norm_chain_nodes(graph: onnx.GraphProto, consts: Mapping[str, ConstantRef]) -> dict[str, str]:
    """Nodes of normalizations by a root mean square or norm, ``{node name: the squared tensor}``.

    A chain starts at a square of ``x`` (``Pow(x, 2)``, ``Mul(x, x)``) read by a ReduceMean/ReduceSum,
    or at a ReduceSumSquare/ReduceL2 of ``x``; it continues through unary ops (Sqrt, Reciprocal) and
    ops with a constant operand (eps Add, 1/N Mul, Max/Clip floors, Pow exponents) and ends at the
    Div/Mul that combines the statistic with ``x`` itself (the normalized result, included). Nothing
    past the normalized result belongs to it (an affine gamma runs on values of order 1).

    Args:
        graph: One graph level.
        consts: Constants visible at that level by name (for ``Pow`` exponents and eps operands).
    """
    cons = consumers(graph)
    found: dict[str, str] = {}
    for n in graph.node:
        if n.op_type in _SQUARE_REDUCE:
            x, group, frontier = n.input[0], {n.name}, [n]
        elif _is_square(n, consts):
            x = n.input[0]
            reds = [c for c in cons.get(n.output[0], []) if c.op_type in _REDUCE]
            if not reds:
                continue
            group, frontier = {n.name, *(r.name for r in reds)}, reds
        else:
            continue
        for _ in range(8):
            nxt = []
            for f in frontier:
                for c in cons.get(f.output[0], []) if f.output else ():
                    if c.name in group:
                        continue
                    others = [i for i in c.input if i and i != f.output[0]]
                    if c.op_type in ("Div", "Mul") and x in others:
                        group.add(c.name)  # the normalized result: x / rms(x) or x * rsqrt(...)
                    elif c.op_type in _STAT_UNARY or (c.op_type in _STAT_CONST and all(i in consts for i in others)):
                        group.add(c.name)
                        nxt.append(c)
            frontier = nxt
        found.update(dict.fromkeys(group, x))
    return found


def _ort_fusable_batch_transpose(perm: list[int]) -> bool:
    """ONNX Runtime's MatmulTransposeFusion takes this Transpose as a batch transpose (``transBatch``)."""
    r = len(perm)
    if r < 3 or perm[0] != 1 or r - 1 not in perm[-2:]:
        return False
    return all(perm[i] + 1 == perm[i + 1] for i in range(r - 3))


def ort_transpose_hazards(graph: onnx.GraphProto, consts: Mapping[str, ConstantRef],
                          outputs: set[str] | None = None) -> set[str]:
    """Transposes that crash ONNX Runtime's CPU session in FP16: names of nodes to keep in FP32.

    ONNX Runtime's CPU provider has no float16 MatMul, so it puts a Cast between an FP16
    ``Transpose`` and its ``MatMul``. Its ``MatmulTransposeFusion`` then swaps that Cast and the
    Transpose to fuse the Transpose into the MatMul; when the Transpose moves the batch axis
    (``perm[0] == 1``, e.g. PyTorch's ``[1, 0, 2]`` in ``nn.MultiheadAttention``) and the other
    MatMul input has another rank (a 2-D weight), it abandons the fusion after the swap without
    marking the graph changed, and the next optimizer (``NchwcTransformer``) reads the stale graph:
    SIGSEGV under the default ``ORT_ENABLE_ALL``. A Transpose computed in FP32 gives the same values
    (it only moves them) and leaves no Cast between it and the MatMul.

    Args:
        graph: One graph level.
        consts: Constants visible there (a same-rank constant operand lets the fusion complete).
        outputs: Graph output names (a Transpose producing one is never fused).
    """
    cons = consumers(graph)
    outputs = outputs if outputs is not None else {o.name for o in graph.output}
    found: set[str] = set()
    for n in graph.node:
        perm = get_attr(n, "perm")
        if n.op_type != "Transpose" or perm is None or n.output[0] in outputs:
            continue
        if not _ort_fusable_batch_transpose(list(perm)):
            continue
        for c in cons.get(n.output[0], []):
            if c.op_type != "MatMul" or len(c.input) < 2:
                continue
            other = c.input[1] if c.input[0] == n.output[0] else c.input[0]
            if other in consts and np.ndim(consts[other].array) == len(perm):
                continue  # same rank, known shape: the fusion completes
            found.add(n.name)
    return found


def sub_path(path: str, node: onnx.NodeProto, attr: str) -> str:
    """Path of one subgraph of ``node`` (``"branch.then_branch"``, ``"loop.body/inner.else_branch"``)."""
    label = node.name or (node.output[0] if node.output else node.op_type)
    return f"{path}/{label}.{attr}" if path else f"{label}.{attr}"


def node_key(path: str, node: onnx.NodeProto) -> str:
    """How a node is named in the FP32 reasons: its name at top level, ``<subgraph path>/<name>`` inside a body."""
    return node.name if not path else f"{path}/{node.name or (node.output[0] if node.output else node.op_type)}"


def level_constants(graph: onnx.GraphProto) -> dict[str, ConstantRef]:
    """Float constants (initializers and Constant nodes) of one graph level, by tensor name."""
    return {c.name: c for c in iter_constants(graph) if not c.graph_path and c.is_float
            and c.kind != "sparse_initializer"}


def blocked_nodes(model: onnx.ModelProto, cfg: FP16Config, ranges: Mapping[str, float] | None = None,
                  masks: Mapping[str, float] | None = None) -> dict[str, str]:
    """Node -> reason it stays FP32, for the top graph and every If/Loop/Scan body (see :func:`node_key`).

    Args:
        model: FP32 model.
        cfg: Block lists and thresholds.
        ranges: ``{tensor: max|x|}`` on calibration data (data rule), optional.
        masks: Constants to be clamped instead of blocking their consumers (:func:`mask_constants`;
            computed when ``None``).
    """
    masks = mask_constants(model, cfg.init_max) if masks is None else masks
    opset = opset_of(model)
    out: dict[str, str] = {}
    _block_level(model.graph, "", top_constants(model), cfg, ranges, masks, opset, out)
    return out


def _block_level(g: onnx.GraphProto, path: str, visible: Mapping[str, ConstantRef], cfg: FP16Config,
                 ranges: Mapping[str, float] | None, masks: Mapping[str, float], opset: int,
                 out: dict[str, str]) -> None:
    """The static and data rules on one graph level (``visible``: constants of it and enclosing levels)."""
    consts = {**visible, **(level_constants(g) if path else {})}
    big: dict[str, float] = {}  # out-of-range FP32 constants (not masks) -> max |x|
    for name, c in consts.items():
        if c.data_type == F32 and name not in masks:
            mx = max_abs_or_inf(c.array)
            c.release()  # the rules below read only small constants: a weight is not kept decoded
            if mx > cfg.init_max:
                big[name] = mx
    regs = [re.compile(p) for p in cfg.node_block_list]
    ln = layernorm_pattern_nodes(g, consts) if cfg.block_layernorm_pattern else set()
    norms = norm_chain_nodes(g, consts) if cfg.block_layernorm_pattern else {}
    hazards = ort_transpose_hazards(g, consts)
    for n in g.node:
        key = node_key(path, n)
        subs = node_subgraphs(n)
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and opset < 19:
            out[key] = f"FP16 Q/DQ scales need opset 19 (model has {opset})"
        elif n.op_type in cfg.op_block_list:
            out[key] = f"op type {n.op_type}" + (": its subgraphs stay FP32 as written" if subs else "")
        elif any(r.search(n.name) for r in regs):
            out[key] = "node_block_list" + (": its subgraphs stay FP32 as written" if subs else "")
        elif subs:  # converted inside; the node's own inputs and outputs stay FP32
            for attr, sub in subs:
                _block_level(sub, sub_path(path, n, attr), consts, cfg, ranges, masks, opset, out)
        elif n.name in ln:
            out[key] = "decomposed LayerNorm"
        elif n.name in norms:
            out[key] = f"RMS / L2 normalization chain of '{norms[n.name]}' (square -> reduce -> root -> divide)"
        elif n.name in hazards:
            out[key] = "batch-transposing Transpose read by MatMul (ONNX Runtime's CPU session crashes on it in FP16)"
        elif n.op_type not in FIXED_OPS:
            for i in n.input:
                if i in big:
                    kind = "initializer" if consts[i].kind == "initializer" else "Constant node"
                    out[key] = f"{kind} '{i}' beyond {cfg.init_max:g} (max |x| = {big[i]:.3g})"
                    break
            # Q/DQ follow the graph's precision (FP16 values up to 65504 quantize fine), so a
            # large activation keeps its *consumers* in FP32, not the quantizer itself
            if key not in out and ranges and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                hot = [t for t in list(n.input) + list(n.output) if ranges.get(t, 0.0) > cfg.data_max]
                if hot:
                    out[key] = f"|activation| {ranges[hot[0]]:.4g} > {cfg.data_max:g} at '{hot[0]}'"
