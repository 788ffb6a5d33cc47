"""``trtopt doctor``: say up front what trtopt will do with a model, and what it cannot.

A user's model (a Paddle2ONNX detector, a transformer with token ids, a recurrent net) fails in
ways our own models never do: opset 11, weights in ``Constant`` nodes, ``-1`` batch dims, state
inputs, control flow, constants beyond float16's range, a graph that is already quantized or
already FP16, weights in external files. Each stage copes with these (or refuses with a clear
line), but a user should learn it *before* paying for calibration. :func:`diagnose` reads the
graph once (through :mod:`trtopt.onnx`, the one package that walks ONNX graphs) and returns
one :class:`Finding` per fact, each with the fix.

Severity: ``info`` (trtopt handles it, nothing to do), ``warn`` (handled, but results or speed
may suffer; read the fix), ``error`` (a stage will refuse this model until the fix is applied).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtopt.errors import InputError
from trtopt.macshare import model_mac_share
from trtopt.onnx.constants import constant_chain, iter_constants
from trtopt.onnx.dims import graph_inputs, is_dynamic_dim, placeholder_dims
from trtopt.onnx.graph import constant_names, opset_of, producers
from trtopt.onnx.io import load_graph_only
from trtopt.onnx.ops import QUANT_OPS, WEIGHTED_OPS
from trtopt.onnx.walk import iter_graphs

_FP16_MAX = 65504.0
_SEVERITIES = ("info", "warn", "error")


@dataclass
class Finding:
    """One fact about the model.

    Attributes:
        code: Stable identifier (``opset``, ``dynamic-dims``, ``control-flow``, ...).
        severity: ``info``, ``warn`` or ``error`` (see the module docstring).
        message: What was found, in words.
        fix: What to do (empty when nothing is needed).
        detail: Machine-readable facts (names, counts) for ``--json``.
    """

    code: str
    severity: str
    message: str
    fix: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    """Everything :func:`diagnose` found about one model."""

    model: str
    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[str]
    op_counts: dict[str, int]
    findings: list[Finding]

    @property
    def worst(self) -> str:
        """Highest severity among the findings (``info`` when there are none)."""
        return max((f.severity for f in self.findings), key=_SEVERITIES.index, default="info")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (``--json``)."""
        d = asdict(self)
        d["worst"] = self.worst
        return d


def _load(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, list[str]]:
    """Load the graph without weight bytes from external files; return (model, external data files)."""
    p = Path(path)
    model = load_graph_only(p)  # an empty graph is an error there, for every command alike
    files = sorted({e.value for g in _graphs(model.graph) for t in g.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL for e in t.external_data if e.key == "location"})
    return model, files


def _graphs(graph: onnx.GraphProto):
    for _path, g in iter_graphs(graph):
        yield g


def diagnose(path: str | os.PathLike[str]) -> DoctorReport:
    """Inspect an ONNX model and list what trtopt will do with it.

    Args:
        path: ``.onnx`` file (external data files are looked up beside it, not loaded).

    Returns:
        The report; its findings are in a fixed order (model, inputs, graph, constants).

    Raises:
        InputError: The file is missing, a directory or not an ONNX model.
    """
    model, ext_files = _load(path)
    g = model.graph
    opset = opset_of(model)
    graphs = list(iter_graphs(g))
    nodes = [(p, n) for p, sg in graphs for n in sg.node]
    ops = Counter(n.op_type for _p, n in nodes)
    findings: list[Finding] = []
    findings += _opset_findings(model, opset)
    inputs, input_findings = _input_findings(model)
    findings += input_findings
    findings += _graph_findings(model, graphs, nodes, ops)
    findings += _constant_findings(model, Path(path), ext_files)
    return DoctorReport(model=str(path), opset=opset, inputs=inputs, outputs=[o.name for o in g.output],
                        op_counts=dict(sorted(ops.items())), findings=findings)


def _opset_findings(model: onnx.ModelProto, opset: int) -> list[Finding]:
    out = []
    custom = sorted({o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx", "ai.onnx.ml")})
    if opset < 13:
        out.append(Finding("opset", "info", f"opset {opset}: per-channel Q/DQ needs opset 13; calibrate and quantize "
                                            "upgrade the graph to 13 with onnx.version_converter first",
                           "", {"opset": opset}))
    else:
        out.append(Finding("opset", "info", f"opset {opset}", "", {"opset": opset}))
    if custom:
        out.append(Finding("custom-domain", "warn", f"operators from custom domain(s) {', '.join(custom)}: ONNX "
                           "Runtime needs their kernels and TensorRT needs a plugin for each",
                           "register the custom-op library with ONNX Runtime and the plugin with TensorRT",
                           {"domains": custom}))
    return out


def _dim_text(d: onnx.TensorShapeProto.Dimension) -> tuple[str, bool]:
    """(printable dim, is dynamic): ``-1``/``0``/unset/named dims are dynamic."""
    if d.HasField("dim_param") and d.dim_param:
        return d.dim_param, True
    if d.HasField("dim_value"):
        return str(d.dim_value), is_dynamic_dim(d)
    return "?", True


def _input_findings(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[Finding]]:
    real = graph_inputs(model)
    inputs, out = [], []
    odd_dims, non_batch, ints = [], [], []
    for gi in real:
        vi = gi.value
        tt = vi.type.tensor_type
        dims = [_dim_text(d) for d in tt.shape.dim]
        dtype = gi.dtype_name if tt.elem_type else "?"
        inputs.append({"name": vi.name, "dtype": dtype, "shape": [int(t) if t.lstrip("-").isdigit() else t
                                                                  for t, _ in dims],
                       "dynamic_axes": [i for i, (_, dyn) in enumerate(dims) if dyn]})
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                odd_dims.append(f"{vi.name}[{i}]={d.dim_value}")
        if not dims:
            non_batch.append(f"{vi.name} (scalar)")
        elif not dims[0][1] and any(dyn for _, dyn in dims[1:]):
            non_batch.append(f"{vi.name} {[t for t, _ in dims]} (batch axis is not axis 0)")
        elif not dims[0][1] and len(real) > 1:
            non_batch.append(f"{vi.name} {[t for t, _ in dims]} (fixed first dim)")
        if tt.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL):
            ints.append(vi.name)
    dyn = [f"{i['name']} [{', '.join(map(str, i['shape']))}]" for i in inputs if i["dynamic_axes"]]
    if dyn:
        out.append(Finding("dynamic-dims", "info", f"dynamic dims: {', '.join(dyn)}",
                           "calibration data fixes them per batch; TensorRT needs an optimization profile "
                           "(min/opt/max shapes)", {"inputs": dyn}))
    if odd_dims:
        out.append(Finding("dim-values", "info", f"dims stored as -1/0 ({', '.join(odd_dims)}) are treated as "
                           "dynamic", "", {"dims": odd_dims}))
    placeholders = [f"{t}[{ax}]={name!r}" for t, ax, name in placeholder_dims(model)]
    if placeholders:
        out.append(Finding("placeholder-dims", "info", f"dims named only by a placeholder ({', '.join(placeholders)}):"
                           " TensorRT would read equal names as one shared dim, so `trtopt build` gives each a unique "
                           "name before parsing (renamed for TensorRT; the file is unchanged)",
                           "give each of them a range with --input NAME:DTYPE:DIMS (or --shapes) when building",
                           {"dims": placeholders}))
    if non_batch:
        out.append(Finding("non-batch-inputs", "warn", f"inputs that may not carry samples on axis 0: "
                           f"{', '.join(non_batch)}",
                           "pass them to calibration as per-call constants (see docs/data-format.md)",
                           {"inputs": non_batch}))
    if ints:
        out.append(Finding("integer-inputs", "info", f"integer/bool inputs {', '.join(ints)} (token ids, masks): "
                           "never quantized; random feeds must stay in their valid range", "", {"inputs": ints}))
    return inputs, out


def _graph_findings(model: onnx.ModelProto, graphs, nodes, ops: Counter) -> list[Finding]:
    out = []
    top = model.graph
    quant = {op: ops[op] for op in QUANT_OPS if ops[op]}
    if quant:
        # a warning, not an error: trtopt's own INT8 models look like this, and build / bench take them
        out.append(Finding("already-quantized", "warn", f"the graph is already quantized ({quant})",
                           "INT8 calibration/quantization refuse it: quantize the FP32 model instead, or build "
                           "and bench this one as it is", quant))
        out.append(_int8_macs_finding(model))
    fp16 = _float16_share(top)
    if fp16:
        out.append(Finding("float16-graph", "warn", f"the graph computes in float16 ({fp16})",
                           "calibrate/quantize refuse it: quantize the FP32 model (use --fp16-rest for INT8 + FP16); "
                           "build and bench take this one as it is", {"float16": fp16}))
    weighted_top = sum(1 for n in top.node if n.op_type in WEIGHTED_OPS)
    sub = [(p, sum(1 for n in sg.node if n.op_type in WEIGHTED_OPS)) for p, sg in graphs if p]
    inside = [(p, k) for p, k in sub if k]
    if inside:
        where = ", ".join(f"{p}: {k}" for p, k in inside[:6]) + (" ..." if len(inside) > 6 else "")
        out.append(Finding("control-flow", "warn", f"{sum(k for _, k in inside)} Conv/Gemm/MatMul sit inside "
                           f"If/Loop/Scan subgraphs ({where}); trtopt calibrates, quantizes and prunes only the "
                           f"{weighted_top} in the main graph, the subgraph layers stay out of INT8 (FP16 "
                           "conversion covers them)",
                           "export the model with the branch resolved (e.g. trace one path) to quantize them",
                           {"subgraph_layers": dict(inside), "main_graph_layers": weighted_top}))
    elif len(graphs) > 1:
        out.append(Finding("control-flow", "info", f"{len(graphs) - 1} If/Loop/Scan subgraph(s) without weighted "
                           "layers: left as they are", ""))
    consts = constant_names(top)
    # a weight behind DequantizeLinear (a Q/DQ model) is still a constant weight
    consts |= {n.output[0] for n in top.node if n.op_type == "DequantizeLinear" and n.input[0] in consts}
    prod = producers(top)  # and so is one that reaches the layer through Identity/Transpose/Reshape/Cast
    w_const = sum(1 for n in top.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1
                  and constant_chain(top, n.input[1], consts=consts, prod=prod) is not None)
    out.append(Finding("weighted-layers", "info" if weighted_top else "error",
                       f"{weighted_top} Conv/ConvTranspose/Gemm/MatMul in the main graph, {w_const} with constant "
                       "weights (INT8 per-channel)" + ("; the others are activation x activation (per-tensor)"
                                                        if w_const < weighted_top else "")
                       if weighted_top else "no Conv/ConvTranspose/Gemm/MatMul in the main graph: nothing to "
                       "quantize or prune",
                       "" if weighted_top else "INT8 needs weighted layers; FP16 still applies",
                       {"layers": weighted_top, "constant_weight": w_const}))
    prod = {o: n for n in top.node for o in n.output}
    bn_after_deconv = []
    for n in top.node:
        src = prod.get(n.input[0]) if n.op_type == "BatchNormalization" else None
        if src is not None and src.op_type == "Add" and any(i in consts for i in src.input):  # Paddle's bias Add
            src = next((prod.get(i) for i in src.input if i not in consts), None)
        if src is not None and src.op_type == "ConvTranspose":
            bn_after_deconv.append(n.name)
    if bn_after_deconv:
        out.append(Finding("bn-after-convtranspose", "info", f"{len(bn_after_deconv)} BatchNormalization after "
                           "ConvTranspose: folded into the weights before quantization", "",
                           {"nodes": bn_after_deconv}))
    silu = sum(1 for n in top.node if n.op_type == "Mul" and _is_swish(n, prod, consts)) + ops.get("HardSwish", 0)
    if silu:
        out.append(Finding("silu", "info", f"{silu} SiLU/Swish/HardSwish activations: TensorRT's entropy "
                           "calibration clips them at the magnitude of the negative dip "
                           "(|-0.28|; HardSwish -0.375); the default method 'auto' guards "
                           "against it", "keep --method auto (not entropy)", {"count": silu}))
    bounded = {op: ops[op] for op in ("Softmax", "Sigmoid", "HardSigmoid", "Tanh") if ops[op]}
    if bounded:
        out.append(Finding("bounded-ops", "info", f"outputs with known ranges ({bounded}) get analytic amax "
                           "under --method auto", "", bounded))
    return out


def _int8_macs_finding(model: onnx.ModelProto) -> Finding:
    """The INT8 share of the weighted ops' MACs at the graph's own opt shapes (``int8-macs``)."""
    try:
        share = model_mac_share(model)
    except InputError as exc:
        return Finding("int8-macs", "info", f"INT8 share of MACs not counted: {exc}",
                       "trtopt bench with evaluation data reports it at the data's shapes")
    at = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in share.shapes.items())
    top = "; ".join(f"{n.name} ({n.op_type}) {100 * n.macs / share.total_macs:.1f}%" for n in share.top_float(3))
    return Finding("int8-macs", "info", f"{share.line()} at {at}" + (f"; largest in float: {top}" if top else ""),
                   "", share.to_json())


def _is_swish(mul: onnx.NodeProto, prod: dict[str, onnx.NodeProto], consts: set[str]) -> bool:
    """``x * Sigmoid(x)`` / ``x * HardSigmoid(x)``, also with Paddle's ``Sigmoid(beta * x)``."""
    for k, i in enumerate(mul.input[:2]):
        gate = prod.get(i)
        if gate is None or gate.op_type not in ("Sigmoid", "HardSigmoid"):
            continue
        x, src = mul.input[1 - k], gate.input[0]
        scaled = prod.get(src)
        if src == x or (scaled is not None and scaled.op_type == "Mul" and x in scaled.input
                        and any(j in consts for j in scaled.input)):
            return True
    return False


def _float16_share(graph: onnx.GraphProto) -> str:
    """Describe a main graph that computes in float16 ('' when it does not).

    float16 inputs, or more float16 than float32 constants (trtopt's own FP16 output keeps float32
    I/O behind Casts, but its weights are float16).
    """
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    ins = [v.name for v in graph.input if v.type.tensor_type.elem_type == f16]
    types = [t.data_type for t in graph.initializer]
    types += [a.t.data_type for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    n16, n32 = types.count(f16), types.count(f32)
    if not ins and n16 <= n32:
        return ""
    return ", ".join(([f"inputs {ins}"] if ins else []) + ([f"{n16} of {n16 + n32} float constants"] if n16 else []))


def _constant_findings(model: onnx.ModelProto, path: Path, ext_files: list[str]) -> list[Finding]:
    out = []
    if ext_files:
        missing = [f for f in ext_files if not (path.parent / f).is_file()]
        size = sum((path.parent / f).stat().st_size for f in ext_files if (path.parent / f).is_file())
        sev = "error" if missing else "info"
        out.append(Finding("external-data", sev, f"weights in {len(ext_files)} external file(s) "
                           f"({size / 2**20:.0f} MiB)" + (f"; missing: {missing}" if missing else "")
                           + ("; over 2 GB, written back as external data" if size >= 2**31 else ""),
                           "keep the data files beside the .onnx" if missing else "",
                           {"files": ext_files, "missing": missing, "bytes": size}))
        if missing:
            return out
    in_const_nodes, big, tiny, masks = 0, [], [], []
    if ext_files:  # every data file is present (checked above): read the weights for the range checks
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    for c in iter_constants(model):
        if c.node is not None:
            in_const_nodes += 1
        if not c.is_float:
            continue
        arr = c.array
        if arr.size == 0:
            continue
        finite = arr[np.isfinite(arr)]
        amax = float(np.abs(finite).max()) if finite.size else 0.0
        if amax > _FP16_MAX:
            (masks if float(finite.min()) <= -_FP16_MAX and float(finite.max()) <= _FP16_MAX else big).append(
                f"{c.name} ({amax:.3g})")
        nz = np.abs(finite[finite != 0])
        if nz.size and float(nz.min()) < 6e-8 and float(np.mean(nz < 6e-8)) > 0.5:
            tiny.append(c.name)
    if in_const_nodes:
        out.append(Finding("constant-nodes", "info", f"{in_const_nodes} constants stored as Constant nodes "
                           "(Paddle2ONNX style): read, range-checked, quantized and converted like initializers", "",
                           {"count": in_const_nodes}))
    if big:
        out.append(Finding("fp16-range", "warn", f"{len(big)} constant(s) beyond float16's range: "
                           f"{', '.join(big[:5])}{' ...' if len(big) > 5 else ''}",
                           "--fp16 keeps these and the nodes using them in FP32; expect less FP16 speedup there",
                           {"constants": big}))
    if masks:
        out.append(Finding("fp16-masks", "info", f"{len(masks)} additive mask constant(s) at float32's minimum "
                           f"({', '.join(masks[:3])}): clamped to -65504 in FP16", "", {"constants": masks}))
    if tiny:
        out.append(Finding("fp16-underflow", "info", f"{len(tiny)} constant(s) mostly below float16's smallest "
                           f"subnormal: {', '.join(tiny[:5])}", "", {"constants": tiny}))
    return out
