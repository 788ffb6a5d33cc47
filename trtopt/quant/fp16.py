"""FP16 conversion with FP32 islands, written for TensorRT's strongly typed mode (brief §5).

TensorRT 11 has no FP16 builder flag: a node runs in the type of its tensors. This converter
retypes the graph to FP16 except where a rule keeps a node in FP32:

* op type in :attr:`FP16Config.op_block_list` (LayerNorm, Softmax, Exp, Pow, large reductions...)
  or node name matching :attr:`FP16Config.node_block_list`;
* the decomposed LayerNorm pattern (ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div,
  and its affine Mul/Add) -- older exports spell LayerNorm out and it overflows in FP16;
* a float constant beyond ``init_max`` (FP16's 65504), inf or NaN -- AutoCast's ``init_max`` rule,
  applied to *every* constant: initializers and ``Constant`` nodes (``value``, ``value_float(s)``,
  ``sparse_value``; Paddle exports store all weights that way), found with
  :func:`trtopt.onnx_graph.iter_constants`. Exception, additive masks: a constant whose
  out-of-range values are all negative and that only reaches a Softmax/LogSoftmax through
  additive or selecting ops (see :func:`mask_constants`) is clamped to :data:`MASK_FILL` instead;
* a node with subgraphs (If/Loop/Scan): its bodies stay FP32 as written, and tensors they read from
  the outer graph are cast back to FP32 for them;
* calibration data showing |activation| > ``data_max`` at a node input/output (AutoCast's
  ``data_max``: above 512 the FP16 spacing is 0.5 or coarser).

Casts are inserted on every FP16<->FP32 boundary (one per tensor and direction), FP32
initializers used by FP16 nodes get an FP16 copy, and graph inputs/outputs stay FP32 by default
(``keep_io_types``; AutoCast's default retypes them, which changes engine I/O). Float ``Constant``
nodes read by FP16 nodes become FP16 initializers (so Paddle models shrink too) and the FP32
originals are dropped once nothing -- subgraphs included -- reads them. Q/DQ nodes in an
opset >= 19 graph are ordinary FP16 nodes (FP16 scales), which is how ``fp16_rest`` works.
We do not use onnxconverter-common: it clamps initializers to +-1e4 and has no data rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtopt.calib.collect import as_model, float_tensor_types
from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx_graph import (
    NameGen,
    consumers,
    drop_unused_initializers,
    node_subgraphs,
    outer_scope_inputs,
    used_tensor_names,
)
from trtopt.quant.config import FP16Config
from trtopt.quant.fp16_masks import MASK_FILL, mask_constants, max_abs_or_inf, top_constants

log = get_logger(__name__)
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
#: Float inputs that must stay FP32 whatever the node precision (Resize roi/scales).
_FP32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
#: Ops whose output type is fixed by an attribute / that accept any input type: never converted.
_FIXED = {"Cast", "CastLike", "Constant", "ConstantOfShape", "EyeLike", "Shape", "Size"}
_LN_OPS = {"Pow", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Reciprocal", "Sub"}
def layernorm_pattern_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of nodes forming decomposed LayerNorm subgraphs."""
    cons = consumers(graph)
    inits = {t.name for t in graph.initializer}
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


def blocked_nodes(model: onnx.ModelProto, cfg: FP16Config, ranges: Mapping[str, float] | None = None,
                  masks: Mapping[str, float] | None = None) -> dict[str, str]:
    """Node name -> reason it stays FP32.

    Args:
        model: FP32 model.
        cfg: Block lists and thresholds.
        ranges: ``{tensor: max|x|}`` on calibration data (data rule), optional.
        masks: Constants to be clamped instead of blocking their consumers (:func:`mask_constants`;
            computed when ``None``).
    """
    g = model.graph
    consts = top_constants(model)
    masks = mask_constants(model, cfg.init_max) if masks is None else masks
    big: dict[str, float] = {}  # out-of-range FP32 constants (not masks) -> max |x|
    for name, c in consts.items():
        if c.data_type == F32 and name not in masks:
            mx = max_abs_or_inf(c.array)
            if mx > cfg.init_max:
                big[name] = mx
    regs = [re.compile(p) for p in cfg.node_block_list]
    ln = layernorm_pattern_nodes(g) if cfg.block_layernorm_pattern else set()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out: dict[str, str] = {}
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and opset < 19:
            out[n.name] = f"FP16 Q/DQ scales need opset 19 (model has {opset})"
        elif n.op_type in cfg.op_block_list:
            out[n.name] = f"op type {n.op_type}"
        elif node_subgraphs(n):
            out[n.name] = "control flow: its subgraphs stay FP32"
        elif any(r.search(n.name) for r in regs):
            out[n.name] = "node_block_list"
        elif n.name in ln:
            out[n.name] = "decomposed LayerNorm"
        elif n.op_type not in _FIXED:
            for i in n.input:
                if i in big:
                    kind = "initializer" if consts[i].kind == "initializer" else "Constant node"
                    out[n.name] = f"{kind} '{i}' beyond {cfg.init_max:g} (max |x| = {big[i]:.3g})"
                    break
            # Q/DQ follow the graph's precision (FP16 values up to 65504 quantize fine), so a
            # large activation keeps its *consumers* in FP32, not the quantizer itself
            if n.name not in out and ranges and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                hot = [t for t in list(n.input) + list(n.output) if ranges.get(t, 0.0) > cfg.data_max]
                if hot:
                    out[n.name] = f"|activation| {ranges[hot[0]]:.4g} > {cfg.data_max:g} at '{hot[0]}'"
    return out


class _Converter:
    def __init__(self, model: onnx.ModelProto, cfg: FP16Config, blocked: Iterable[str],
                 masks: Mapping[str, float] | None = None) -> None:
        self.m, self.cfg, self.blocked = model, cfg, set(blocked)
        self.masks = dict(masks or {})
        self.g = model.graph
        self.names = NameGen(self.g)
        types = float_tensor_types(model)
        self.inits = {t.name: t for t in self.g.initializer}
        self.consts = top_constants(model)  # initializers and Constant nodes: converted as data, not Cast
        self.cur: dict[str, int] = {k: v for k, v in types.items() if v in (F32, F16)}
        self.cur.update({k: c.data_type for k, c in self.consts.items() if c.data_type in (F32, F16)})
        self.casts: dict[tuple[str, int], str] = {}
        self.new_inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def _to(self, tensor: str, dtype: int) -> str:
        """Name of ``tensor`` converted to ``dtype`` (FP16 initializer copy or a cached Cast)."""
        key = (tensor, dtype)
        if key in self.casts:
            return self.casts[key]
        const = self.consts.get(tensor)
        suffix = "fp16" if dtype == F16 else "fp32"
        name = self.names(f"{tensor}_{suffix}")
        if const is not None:
            arr = np.asarray(const.array)
            if dtype == F16 and tensor in self.masks:
                arr = np.maximum(arr, self.masks[tensor])
            arr = arr.astype(np.float16 if dtype == F16 else np.float32)
            self.new_inits.append(numpy_helper.from_array(arr, name))
        else:
            self.nodes.append(helper.make_node("Cast", [tensor], [name], to=dtype, name=self.names(f"{name}_Cast")))
        self.cur[name] = dtype
        self.casts[key] = name
        return name

    def node(self, n: onnx.NodeProto) -> None:
        if n.op_type in _FIXED:
            self.nodes.append(n)
            return
        want = F32 if n.name in self.blocked else F16
        if node_subgraphs(n):  # bodies stay FP32: outer tensors they read must be FP32 too
            want = F32
            renames = {t: self._to(t, F32) for t in outer_scope_inputs(n) if self.cur.get(t) == F16}
            if renames:
                _rename_in_subgraphs(n, renames)
        keep32 = _FP32_INPUTS.get(n.op_type, ())
        for i, t in enumerate(n.input):
            have = self.cur.get(t)
            if not t or have is None:
                continue
            target = F32 if i in keep32 else want
            if have != target:
                n.input[i] = self._to(t, target)
        self.nodes.append(n)
        for o in n.output:
            if o in self.cur:
                self.cur[o] = want

    def run(self) -> onnx.ModelProto:
        g = self.g
        io16 = not self.cfg.keep_io_types
        for vi in g.input:
            if vi.name not in self.inits and self.cur.get(vi.name) == F32 and io16:
                vi.type.tensor_type.elem_type = F16
                self.cur[vi.name] = F16
        for n in list(g.node):
            self.node(n)
        outputs = {o.name: o for o in g.output}
        for name, vi in outputs.items():
            have = self.cur.get(name)
            if have is None:
                continue
            want = F16 if io16 else F32
            if have != want:  # rename the producer's tensor and cast into the output name
                inner = self.names(f"{name}_{'fp16' if have == F16 else 'fp32'}")
                for n in self.nodes:
                    n.output[:] = [inner if o == name else o for o in n.output]
                    n.input[:] = [inner if i == name else i for i in n.input]
                self.nodes.append(helper.make_node("Cast", [inner], [name], to=want, name=self.names(f"{name}_Cast")))
            vi.type.tensor_type.elem_type = want
        del g.node[:]
        g.node.extend(self.nodes)
        g.initializer.extend(self.new_inits)
        _drop_unused_constants(g)
        del g.value_info[:]
        return self.m


def _rename_in_subgraphs(node: onnx.NodeProto, renames: Mapping[str, str]) -> None:
    """Point every read of an outer tensor inside ``node``'s subgraphs at its FP32 copy.

    ONNX forbids a subgraph from shadowing an outer name, so a plain rename is exact. (A body
    output must be produced by a node of the body, so outer names appear only as node inputs.)
    """
    for _, sub in node_subgraphs(node):
        for n in sub.node:
            n.input[:] = [renames.get(i, i) for i in n.input]
            _rename_in_subgraphs(n, renames)


def _drop_unused_constants(g: onnx.GraphProto) -> None:
    """Drop initializers and Constant nodes nothing reads any more; reads inside subgraphs count."""
    drop_unused_initializers(g)
    used = used_tensor_names(g)
    keep = [n for n in g.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def convert_fp16(model: str | os.PathLike[str] | onnx.ModelProto, config: FP16Config | None = None,
                 source: Iterable[dict[str, np.ndarray]] | None = None,
                 ranges: Mapping[str, float] | None = None) -> onnx.ModelProto:
    """Convert an FP32 model to FP16 with FP32 islands and FP32 graph I/O (by default).

    With ``source``, the converted model is also previewed in FP16 arithmetic on the first
    ``config.overflow_samples`` samples (:func:`trtopt.quant.fp16_check.fp16_overflows`); nodes that
    overflow are kept in FP32 and the model is converted again, up to ``config.overflow_rounds`` times.
    Reasons are stored in metadata: ``trtopt.fp16.fp32_nodes`` (names) and ``trtopt.fp16.fp32_reasons``
    (JSON ``{node: reason}``).

    Args:
        model: FP32 ``.onnx`` path or ModelProto (not modified).
        config: Block lists and data rule thresholds.
        source: Calibration batches for the data rule (max |x| of every float tensor is measured
            with ONNX Runtime) and the overflow preview; without it (and without ``ranges``) both
            are skipped.
        ranges: Precomputed ``{tensor: max|x|}`` instead of ``source``.

    Returns:
        The mixed-precision model.

    Raises:
        InputError: The preview still finds an FP16 overflow that keeping nodes in FP32 cannot remove
            (e.g. FP16 graph inputs holding values beyond 65504).
    """
    import json

    cfg = config or FP16Config()
    src = as_model(model)
    m = onnx.ModelProto()
    m.CopyFrom(src)
    if source is not None and ranges is None:
        from trtopt.calib import CalibrationConfig, calibrate

        ranges = calibrate(m, source, CalibrationConfig(method="minmax", scope="all")).amax
    masks = mask_constants(m, cfg.init_max)
    for name in masks:
        log.info("FP16: clamping additive mask '%s' to %g (exact in effect before Softmax)", name, MASK_FILL)
    blocked = blocked_nodes(m, cfg, ranges, masks)
    feeds = next(iter(source), None) if source is not None and cfg.overflow_samples else None
    static = dict(getattr(source, "static_inputs", None) or {})
    previewed = 0
    if feeds is not None:
        feeds = {**feeds, **static}
        from trtopt.batching import rule_for_onnx

        rule = rule_for_onnx(m, static)  # the preview runs one call: a fixed batch size sets its samples
        previewed = min(rule.call_size(cfg.overflow_samples, rule.samples(feeds)), rule.samples(feeds))
    originals = {n.name for n in m.graph.node}
    for _ in range(cfg.overflow_rounds):
        work = m
        if feeds is not None:  # the converter works in place: keep m pristine for another round
            work = onnx.ModelProto()
            work.CopyFrom(m)
        out = _Converter(work, cfg, blocked, masks).run()
        if feeds is None:
            break
        from trtopt.quant.fp16_check import fp16_overflows

        found = fp16_overflows(out, feeds, reference=m, max_samples=cfg.overflow_samples, static=static)
        new: dict[str, str] = {}
        for f in found:
            # an overflowing Cast was inserted by the converter: its FP16 readers must stay FP32
            for name in (f.node,) if f.node in originals else f.consumers:
                if name in originals and name not in blocked:
                    new[name] = f"FP16 overflow on data: {f}"
        if not found:
            break
        if not new:
            raise InputError(f"FP16 conversion overflows on the calibration data and keeping nodes in FP32 does "
                             f"not remove it: {found[0]}")
        blocked.update(new)
    else:
        if feeds is not None and found:
            raise InputError(f"FP16 conversion still overflows after {cfg.overflow_rounds} rounds of keeping "
                             f"nodes in FP32: {found[0]} (raise fp16.overflow_rounds or exclude it)")
    for name, why in blocked.items():
        log.info("FP16: keeping %s in FP32 (%s)", name, why)
    out.metadata_props.append(
        onnx.StringStringEntryProto(key="trtopt.fp16.fp32_nodes", value=",".join(sorted(blocked))))
    out.metadata_props.append(onnx.StringStringEntryProto(key="trtopt.fp16.fp32_reasons", value=json.dumps(blocked)))
    if feeds is not None:
        out.metadata_props.append(onnx.StringStringEntryProto(key="trtopt.fp16.overflow_preview",
                                                              value=f"{previewed} samples, no overflow"))
    return out
