"""FP16 conversion with FP32 islands, written for TensorRT's strongly typed mode.

TensorRT 11 has no FP16 builder flag: a node runs in the type of its tensors. This converter
retypes the graph to FP16 except where a rule keeps a node in FP32:

* op type in :attr:`FP16Config.op_block_list` (LayerNorm, Softmax, Exp, Pow, large reductions...)
  or node name matching :attr:`FP16Config.node_block_list`;
* the decomposed LayerNorm pattern (ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div,
  and its affine Mul/Add) -- older exports spell LayerNorm out and it overflows in FP16 -- and every
  normalization chain from a square to the normalized result (RMSNorm, L2 normalization);
* a batch-transposing Transpose read by a MatMul, which ONNX Runtime's CPU session crashes on in FP16;
* a float constant beyond ``init_max`` (FP16's 65504), inf or NaN -- AutoCast's ``init_max`` rule,
  applied to *every* constant: initializers and ``Constant`` nodes (``value``, ``value_float(s)``,
  ``sparse_value``; Paddle exports store all weights that way), found with
  :func:`trtopt.onnx.constants.iter_constants`. Exception, additive masks: a constant whose
  out-of-range values are all negative and that only reaches a Softmax/LogSoftmax through
  additive or selecting ops (see :func:`mask_constants`) is clamped to :data:`MASK_FILL` instead;
* a node with subgraphs (If/Loop/Scan) only when the block lists name it: its bodies then stay FP32
  as written, and tensors they read from the outer graph are cast back to FP32 for them. Otherwise
  the bodies are converted by the same rules, the node's own inputs and outputs stay FP32 (Casts at
  the body boundary), and body nodes are named ``<node>.<attribute>/<name>`` (:func:`node_key`);
* calibration data showing |activation| > ``data_max`` at a node input/output (AutoCast's
  ``data_max``: above 512 the FP16 spacing is 0.5 or coarser).

Casts are inserted on every FP16<->FP32 boundary (one per tensor and direction), FP32
initializers used by FP16 nodes get an FP16 copy, and graph inputs/outputs stay FP32 by default
(``keep_io_types``; AutoCast's default retypes them, which changes engine I/O). Float ``Constant``
nodes read by FP16 nodes become FP16 initializers (so Paddle models shrink too) and the FP32
originals are dropped once nothing -- subgraphs included -- reads them. Q/DQ nodes in an
opset >= 19 graph are ordinary FP16 nodes (FP16 scales), which is how ``fp16_rest`` works.
A result in which no node computes in FP16 is an error, never the FP32 model under another name.
We do not use onnxconverter-common: it clamps initializers to +-1e4 and has no data rule.
The rules themselves live in :mod:`trtopt.quant.fp16_patterns`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx.graph import NameGen, as_model, float_tensor_types
from trtopt.onnx.rewrite import drop_unused_initializers
from trtopt.onnx.walk import iter_graphs, node_subgraphs, outer_scope_inputs, used_tensor_names
from trtopt.quant.config import FP16Config
from trtopt.quant.fp16_masks import MASK_FILL, mask_constants
from trtopt.quant.fp16_patterns import FIXED_OPS as _FIXED
from trtopt.quant.fp16_patterns import blocked_nodes, level_constants, node_key, sub_path

log = get_logger(__name__)
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
#: Float inputs that must stay FP32 whatever the node precision (Resize roi/scales).
_FP32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
#: Ops that only move values: an FP16 model whose only FP16 nodes are these computes nothing in FP16.
_LAYOUT_ONLY = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}


class _Converter:
    """Retype one graph level; a body's converter hands casts of enclosing tensors to its parent."""

    def __init__(self, model: onnx.ModelProto, cfg: FP16Config, blocked: Iterable[str],
                 masks: Mapping[str, float] | None = None, *, graph: onnx.GraphProto | None = None,
                 parent: _Converter | None = None, path: str = "") -> None:
        self.m, self.cfg, self.blocked = model, cfg, set(blocked)
        self.masks = dict(masks or {}) if parent is None else {}  # masks are top-level constants
        self.g = graph if graph is not None else model.graph
        self.parent, self.path = parent, path
        self.names = parent.names if parent else NameGen(self.g)
        self.inits = {t.name: t for t in self.g.initializer}
        self.consts = level_constants(self.g)  # initializers and Constant nodes: converted as data, not Cast
        types = float_tensor_types(model) if parent is None else _level_types(model, self.g, parent.original)
        self.original = {**(parent.original if parent else {}), **types}  # FP32-model types, for nested bodies
        local = {i.name for i in self.g.input} | {o for n in self.g.node for o in n.output} | set(self.consts)
        self.cur: dict[str, int] = {k: v for k, v in types.items() if v in (F32, F16) and k in local}
        self.cur.update({k: c.data_type for k, c in self.consts.items() if c.data_type in (F32, F16)})
        self.casts: dict[tuple[str, int], str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.fp16_compute = 0  # nodes (this level and below) that compute in FP16

    def _type(self, tensor: str) -> int | None:
        if tensor in self.cur:
            return self.cur[tensor]
        return self.parent._type(tensor) if self.parent else None

    def _to(self, tensor: str, dtype: int) -> str:
        """Name of ``tensor`` converted to ``dtype`` (FP16 initializer copy or a cached Cast)."""
        if tensor not in self.cur and self.parent is not None:  # an enclosing tensor: cast it out there
            return self.parent._to(tensor, dtype)
        key = (tensor, dtype)
        if key in self.casts:
            return self.casts[key]
        const = self.consts.get(tensor)
        suffix = "fp16" if dtype == F16 else "fp32"
        name = self.names(f"{tensor}_{suffix}")
        if const is not None:
            arr = np.asarray(const.array)
            const.release()  # converted once (cached in self.casts): not kept decoded
            if dtype == F16 and tensor in self.masks:
                arr = np.maximum(arr, self.masks[tensor])
            arr = arr.astype(np.float16 if dtype == F16 else np.float32)
            # straight into the graph, after its initializers (a list to extend later would hold a
            # second copy of every converted weight until the end)
            self.g.initializer.append(numpy_helper.from_array(arr, name))
        else:
            self.nodes.append(helper.make_node("Cast", [tensor], [name], to=dtype, name=self.names(f"{name}_Cast")))
        self.cur[name] = dtype
        self.casts[key] = name
        return name

    def node(self, n: onnx.NodeProto) -> None:
        if n.op_type in _FIXED:
            self.nodes.append(n)
            return
        key = node_key(self.path, n)
        want = F32 if key in self.blocked else F16
        if node_subgraphs(n):  # the node's own inputs/outputs stay FP32 (its bodies' interface)
            if key in self.blocked:  # bodies stay FP32 as written: outer tensors they read must be FP32 too
                renames = {t: self._to(t, F32) for t in outer_scope_inputs(n) if self._type(t) == F16}
                if renames:
                    _rename_in_subgraphs(n, renames)
            else:
                for attr, sub in node_subgraphs(n):
                    body = _Converter(self.m, self.cfg, self.blocked, graph=sub, parent=self,
                                      path=sub_path(self.path, n, attr))
                    body.run_level({o.name: body.cur.get(o.name) for o in sub.output})
                    self.fp16_compute += body.fp16_compute
            want = F32
        keep32 = _FP32_INPUTS.get(n.op_type, ())
        for i, t in enumerate(n.input):
            have = self._type(t) if t else None
            if have is None:
                continue
            target = F32 if i in keep32 else want
            if have != target:
                n.input[i] = self._to(t, target)
        self.nodes.append(n)
        floats = [o for o in n.output if o in self.cur]
        for o in floats:
            self.cur[o] = want
        if want == F16 and floats and n.op_type not in _LAYOUT_ONLY:
            self.fp16_compute += 1

    def run_level(self, out_types: Mapping[str, int | None]) -> None:
        """Convert this level's nodes; graph outputs get ``out_types`` (Casts appended where they differ)."""
        g = self.g
        for n in list(g.node):
            self.node(n)
        for name, want in out_types.items():
            have = self.cur.get(name)
            if have is None or want is None or have == want:
                continue
            # rename the producer's tensor (and its readers, subgraphs included) and cast into the output name
            inner = self.names(f"{name}_{'fp16' if have == F16 else 'fp32'}")
            for n in self.nodes:
                n.output[:] = [inner if o == name else o for o in n.output]
                n.input[:] = [inner if i == name else i for i in n.input]
                if node_subgraphs(n):
                    _rename_in_subgraphs(n, {name: inner})
            self.nodes.append(helper.make_node("Cast", [inner], [name], to=want, name=self.names(f"{name}_Cast")))
        del g.node[:]
        g.node.extend(self.nodes)
        _drop_unused_constants(g)
        del g.value_info[:]

    def run(self) -> onnx.ModelProto:
        g = self.g
        io16 = not self.cfg.keep_io_types
        for vi in g.input:
            if vi.name not in self.inits and self.cur.get(vi.name) == F32 and io16:
                vi.type.tensor_type.elem_type = F16
                self.cur[vi.name] = F16
        want = F16 if io16 else F32
        self.run_level({o.name: want for o in g.output})
        for vi in g.output:
            if vi.name in self.cur:
                vi.type.tensor_type.elem_type = want
        return self.m


def _level_types(model: onnx.ModelProto, graph: onnx.GraphProto, outer: Mapping[str, int]) -> dict[str, int]:
    """Element types of one subgraph's tensors in the FP32 model (best effort).

    ONNX shape inference records no types inside subgraphs, so the body is inferred on its own:
    a model of the body whose enclosing-scope tensors are typed graph inputs.
    """
    g = onnx.GraphProto()
    g.CopyFrom(graph)
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    reads = [i for n in g.node for i in list(n.input) + outer_scope_inputs(n)]
    for name in dict.fromkeys(reads):
        if name and name not in defined and name in outer:
            g.input.append(helper.make_tensor_value_info(name, outer[name], None))
    sub = helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(sub).graph
    except Exception:
        inferred = g
    vis = list(inferred.input) + list(inferred.output) + list(inferred.value_info)
    return {v.name: v.type.tensor_type.elem_type for v in vis if v.type.tensor_type.elem_type}


def _rename_in_subgraphs(node: onnx.NodeProto, renames: Mapping[str, str]) -> None:
    """Point every read of an outer tensor inside ``node``'s subgraphs at a new name (FP32 copy, renamed output).

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


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every unnamed node (all levels) a unique name: the FP32 rules and reasons name nodes."""
    names = NameGen(graph)
    for _, g in iter_graphs(graph):
        for n in g.node:
            if not n.name:
                n.name = names(f"{n.op_type}_{n.output[0] if n.output else 'node'}")


@dataclass(frozen=True)
class FP16Result:
    """What :func:`convert_fp16` made.

    Attributes:
        model: The mixed-precision model (its metadata entries ``trtopt.fp16.fp32_nodes``,
            ``trtopt.fp16.fp32_reasons`` and ``trtopt.fp16.overflow_preview`` record the same facts for
            readers of the saved file).
        fp32_reasons: Node -> why it stays FP32.
        overflow_preview: ``"<n> samples, no overflow"`` when the preview ran, else ``None``.
    """

    model: onnx.ModelProto
    fp32_reasons: dict[str, str] = field(default_factory=dict)
    overflow_preview: str | None = None


def convert_fp16(model: str | os.PathLike[str] | onnx.ModelProto, config: FP16Config | None = None,
                 ranges: Mapping[str, float] | None = None, preview: Mapping[str, np.ndarray] | None = None,
                 static: Collection[str] = ()) -> FP16Result:
    """Convert an FP32 model to FP16 with FP32 islands and FP32 graph I/O (by default).

    With ``preview``, the converted model is also run in FP16 arithmetic on its first
    ``config.overflow_samples`` samples (:func:`trtopt.quant.fp16_check.fp16_overflows`); nodes that
    overflow are kept in FP32 and the model is converted again, up to ``config.overflow_rounds`` times.
    The result holds the reasons (``{node: reason}``); they are also written into the model's metadata
    for readers of the saved file: ``trtopt.fp16.fp32_nodes`` (names) and ``trtopt.fp16.fp32_reasons``
    (JSON). :func:`trtopt.quant.api.quantize` measures ``ranges`` and picks ``preview`` from calibration data.

    Args:
        model: FP32 ``.onnx`` path or ModelProto (not modified).
        config: Block lists and data rule thresholds.
        ranges: ``{tensor: max|x|}`` over calibration data for the data rule (``None``: skipped).
        preview: One call's inputs by name (samples on axis 0, static inputs whole) for the overflow
            preview (``None``: skipped).
        static: Names in ``preview`` that are per-call constants (not cut into samples).

    Returns:
        The mixed-precision model, the FP32 nodes and why, and the preview's outcome.

    Raises:
        InputError: The preview still finds an FP16 overflow that keeping nodes in FP32 cannot remove
            (e.g. FP16 graph inputs holding values beyond 65504), or no node would compute in FP16
            (the rules keep everything in FP32: the result would be the FP32 model).
    """
    import json

    cfg = config or FP16Config()
    src = as_model(model)
    if src is model:  # the caller's model is never changed
        m = onnx.ModelProto()
        m.CopyFrom(src)
    else:  # loaded here from a path: nobody else holds it (no second copy of a multi-GB model)
        m = src
    _name_nodes(m.graph)
    masks = mask_constants(m, cfg.init_max)
    for name in masks:
        log.info("FP16: clamping additive mask '%s' to %g (exact in effect before Softmax)", name, MASK_FILL)
    blocked = blocked_nodes(m, cfg, ranges, masks)
    feeds = dict(preview) if preview is not None and cfg.overflow_samples else None
    static = tuple(static)
    previewed = 0
    if feeds is not None:
        from trtopt.batching import rule_for_onnx

        rule = rule_for_onnx(m, static)  # the preview runs one call: a fixed batch size sets its samples
        previewed = min(rule.call_size(cfg.overflow_samples, rule.samples(feeds)), rule.samples(feeds))
    originals = {n.name for n in m.graph.node}
    for _ in range(cfg.overflow_rounds):
        work = m
        if feeds is not None:  # the converter works in place: keep m pristine for another round
            work = onnx.ModelProto()
            work.CopyFrom(m)
        conv = _Converter(work, cfg, blocked, masks)
        out = conv.run()
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
    if not conv.fp16_compute:
        kept = "; ".join(f"{k}: {v}" for k, v in list(blocked.items())[:3]) + (" ..." if len(blocked) > 3 else "")
        raise InputError(f"FP16 conversion leaves no node computing in FP16: the result would be the FP32 model "
                         f"({len(blocked)} node(s) kept in FP32{': ' + kept if kept else ''})")
    # protobuf frees a message's memory only with the whole message: the converted proto still holds
    # every FP32 weight it replaced; a fresh copy holds only the model (1x instead of 3x its size)
    compact = onnx.ModelProto()
    compact.CopyFrom(out)
    out = compact
    out.metadata_props.append(
        onnx.StringStringEntryProto(key="trtopt.fp16.fp32_nodes", value=",".join(sorted(blocked))))
    out.metadata_props.append(onnx.StringStringEntryProto(key="trtopt.fp16.fp32_reasons", value=json.dumps(blocked)))
    preview_note = f"{previewed} samples, no overflow" if feeds is not None else None
    if preview_note is not None:
        out.metadata_props.append(onnx.StringStringEntryProto(key="trtopt.fp16.overflow_preview", value=preview_note))
    return FP16Result(out, dict(blocked), preview_note)
