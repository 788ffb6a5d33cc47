"""Prove what compiled to INT8 / FP16: compiled layers matched back to the ONNX graph's compute nodes.

A Q/DQ graph only *asks* for INT8: TensorRT fuses a DequantizeLinear into the following
Conv/ConvTranspose/Gemm/MatMul only when the pattern is one it supports, and otherwise silently
computes that layer in float (per-channel weight scales on the wrong axis build without any error).
The only evidence is the compiled layer list:

- TensorRT for RTX logs it at VERBOSE with ``profiling_verbosity = DETAILED`` as a ``Layers:`` block,
  one line per layer: ``Name: /c/Conv_myl0_1, LayerType: correlation, Inputs: [ { ... Datatype: Int8,
  ... }], Constants: [...], Outputs: [...], TacticName: ..., StreamId: 0, Metadata: [ONNX Layer: /c/Conv]
  [ONNX Layer: node_of_xd]`` (measured, see docs/tensorrt.md);
- TensorRT 10/11 gives the same per layer in the engine inspector's JSON (``Inputs`` with
  ``Format/Datatype`` or ``Datatype``, ``Metadata``), which needs a GPU to deserialize the engine.

The ONNX parser names a layer after its node, or ``node_of_<first output>`` for an unnamed node, and
lists every ONNX node fused into a layer in its Metadata. For each compute node the compiled input
datatype is read from the compute layers (conv/gemm types, not the ``kgen`` pointwise kernels around
them) whose Metadata names it. Nothing here imports TensorRT.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trtopt.errors import BuildError

_DTYPE = re.compile(r"Datatype:\s*([A-Za-z0-9]+)")
_ONNX = re.compile(r"\[ONNX Layer:\s*([^\]]*)\]")
_FIELDS = ("Inputs: [", "Constants: [", "Outputs: [", "TacticName:", "Metadata:")
#: Substrings of compiled layer types that compute a Conv/ConvTranspose/Gemm/MatMul (RTX: correlation,
#: deconv, gemm, runtime_fusion; TensorRT 10/11 inspector: CaskConvolution, CaskGemmMatrixMultiply, ...).
_COMPUTE_TYPES = ("correlation", "conv", "deconv", "gemm", "matrix", "fusion", "fully", "fc")
#: Substrings of compiled layer *names* of compute kernels generated as ``kgen`` (RTX fuses FP16
#: attention Q*K^T / softmax / *V into one ``kgen`` layer named ``_gemm_mha_v2_...``; measured on MiniLM).
_COMPUTE_NAMES = ("gemm", "mha", "conv", "matmul", "_fc")
#: Canonical precision of a compiled datatype name.
_CANON = {"int8": "INT8", "uint8": "INT8", "fp8": "FP8", "int4": "INT4", "fp4": "FP4", "half": "FP16",
          "fp16": "FP16", "bfloat16": "BF16", "bf16": "BF16", "float": "FP32", "fp32": "FP32"}
_INTEGER = ("INT8", "FP8", "INT4", "FP4")


def _canon(dtype: str) -> str:
    low = dtype.lower()
    return _CANON.get(low) or next((v for k, v in _CANON.items() if k in low), dtype.upper())


def parse_layers_block(text: str) -> list[dict[str, Any]]:
    """Parse TensorRT-for-RTX's VERBOSE ``Layers:`` block.

    Args:
        text: The log message starting with ``Layers:`` (later ``I/O Tensors:`` sections are ignored).

    Returns:
        One dict per layer: ``name``, ``type``, ``inputs`` / ``constants`` / ``outputs`` (canonical
        datatypes, e.g. ``INT8``, ``FP16``, ``FP32``) and ``onnx_nodes`` (names from its Metadata).
    """
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("Name: ") or ", LayerType: " not in line:
            continue
        name, _, rest = line[len("Name: "):].partition(", LayerType: ")
        ltype = rest.split(",", 1)[0].strip()
        pos = {f: rest.find(f) for f in _FIELDS}
        parts = {}
        for i, f in enumerate(_FIELDS):
            if pos[f] < 0:
                parts[f] = ""
                continue
            ends = [pos[g] for g in _FIELDS[i + 1:] if pos[g] > pos[f]]
            parts[f] = rest[pos[f]:min(ends) if ends else len(rest)]
        out.append({"name": name, "type": ltype,
                    "inputs": [_canon(d) for d in _DTYPE.findall(parts["Inputs: ["])],
                    "constants": [_canon(d) for d in _DTYPE.findall(parts["Constants: ["])],
                    "outputs": [_canon(d) for d in _DTYPE.findall(parts["Outputs: ["])],
                    "onnx_nodes": [n.strip() for n in _ONNX.findall(parts["Metadata:"])]})
    return out


def inspector_layers(info: str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The same per-layer dicts from TensorRT 10/11 engine-inspector JSON (``DETAILED`` verbosity).

    Returns an empty list when the JSON has no detailed layers (``LAYER_NAMES_ONLY``, not JSON).
    """
    try:
        doc = json.loads(info) if isinstance(info, str) else dict(info)
    except json.JSONDecodeError:
        return []
    out = []
    for layer in (doc.get("Layers") or []) if isinstance(doc, dict) else []:
        if not isinstance(layer, dict):
            continue

        def types(key: str, layer: dict[str, Any] = layer) -> list[str]:
            items = [t for t in layer.get(key) or [] if isinstance(t, dict)]
            return [_canon(str(t.get("Datatype") or t.get("Format/Datatype") or "")) for t in items]

        out.append({"name": str(layer.get("Name", "")), "type": str(layer.get("LayerType", "")),
                    "inputs": types("Inputs"), "constants": [], "outputs": types("Outputs"),
                    "onnx_nodes": [n.strip() for n in _ONNX.findall(str(layer.get("Metadata", "")))]})
    return out


@dataclass
class PrecisionReport:
    """Compiled input precision of every ONNX Conv/ConvTranspose/Gemm/MatMul.

    Attributes:
        nodes: Per compute node: ``node``, ``op``, ``module`` (PyTorch module or None), ``quantized``
            (both inputs come from DequantizeLinear), ``compiled`` (``INT8``, ``FP16``, ``FP32`` or
            None when no compiled layer names the node) and ``layer`` (compiled layer name).
        available: A layer list was available (False: verbosity too low or no inspector).

    With the input shapes given (:func:`precision_report`), each node also has ``macs`` (its
    multiply-accumulates at those shapes, :func:`trtopt.onnx.macs.mac_share`), and the INT8 share of
    the compiled engine is weighted by them.
    """

    nodes: list[dict[str, Any]] = field(default_factory=list)
    available: bool = True

    @property
    def total_macs(self) -> int | None:
        """MACs of every compute node, ``None`` when no node has a MAC count."""
        counted = [n["macs"] for n in self.nodes if n.get("macs") is not None]
        return sum(counted) if counted else None

    @property
    def int8_macs(self) -> int | None:
        """MACs of the compute nodes compiled with integer (INT8/FP8/INT4) inputs."""
        if self.total_macs is None:
            return None
        return sum(n.get("macs") or 0 for n in self.nodes if n["compiled"] in _INTEGER)

    @property
    def int8_mac_share(self) -> float | None:
        """``int8_macs / total_macs`` (``None`` without MAC counts or without a layer list)."""
        t, i = self.total_macs, self.int8_macs
        return None if not self.available or not t or i is None else i / t

    def mac_line(self) -> str:
        """``"MACs compiled INT8: 97.1% of 2.31 GMAC"``, or ``""`` without MAC counts."""
        share = self.int8_mac_share
        if share is None:
            return ""
        from trtopt.onnx.macs import format_macs

        return f"MACs compiled INT8: {100 * share:.1f}% of {format_macs(self.total_macs or 0)}"

    @property
    def quantized(self) -> int:
        """Compute nodes with Q/DQ on both inputs in the ONNX graph."""
        return sum(1 for n in self.nodes if n["quantized"])

    @property
    def int8(self) -> int:
        """Quantized nodes that compiled with integer (INT8/FP8/INT4) inputs."""
        return sum(1 for n in self.nodes if n["quantized"] and n["compiled"] in _INTEGER)

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        """Quantized nodes that compiled in float (or were not found in the compiled layers)."""
        return [n for n in self.nodes if n["quantized"] and n["compiled"] not in _INTEGER]

    def counts(self) -> dict[str, int]:
        """Compute nodes per compiled precision (``unknown`` when not found)."""
        c: dict[str, int] = {}
        for n in self.nodes:
            c[n["compiled"] or "unknown"] = c.get(n["compiled"] or "unknown", 0) + 1
        return dict(sorted(c.items()))

    def summary(self) -> str:
        """``"quantized in ONNX: 21, compiled INT8: 21, fell back to float: 0"``."""
        if not self.available:
            return "compiled precisions unknown (build with profiling_verbosity detailed)"
        return (f"quantized in ONNX: {self.quantized}, compiled INT8: {self.int8}, "
                f"fell back to float: {len(self.fallbacks)}")

    def fallback_lines(self) -> list[str]:
        """One line per fallback: ONNX node, operator, PyTorch module, compiled precision."""
        return [f"{n['node']} ({n['op']}{', module ' + n['module'] if n['module'] else ''}): "
                f"{n['compiled'] or 'not found in the compiled layers'}" for n in self.fallbacks]

    def to_dict(self) -> dict[str, Any]:
        """JSON form for manifests and bench results."""
        return {"available": self.available, "summary": self.summary(), "quantized": self.quantized,
                "int8": self.int8, "fallbacks": self.fallbacks, "compute_precisions": self.counts(),
                "total_macs": self.total_macs, "int8_macs": self.int8_macs, "int8_mac_share": self.int8_mac_share,
                "mac_summary": self.mac_line(), "nodes": self.nodes}

    def raise_if_fallbacks(self, what: str) -> None:
        """Raise :class:`BuildError` (one line) when a quantized node compiled in float (``--strict``)."""
        if not self.available:
            raise BuildError(f"{what}: --strict needs the compiled layer list (profiling_verbosity detailed)")
        if self.fallbacks:
            raise BuildError(f"{what}: {len(self.fallbacks)} of {self.quantized} quantized layers compiled in float "
                             f"(--strict): {'; '.join(self.fallback_lines())}")


def _compiled(layers: Sequence[Mapping[str, Any]], trt_name: str) -> tuple[str | None, str | None]:
    """(precision, layer name) of the compute layer(s) that ``trt_name`` was fused into."""
    named = [ly for ly in layers if trt_name in ly.get("onnx_nodes", ())]
    compute = [ly for ly in named if any(t in str(ly.get("type", "")).lower() for t in _COMPUTE_TYPES)
               or any(t in str(ly.get("name", "")).lower() for t in _COMPUTE_NAMES)]
    pick = compute or [ly for ly in named if str(ly.get("name", "")).startswith(trt_name)]
    if not pick:
        return None, None
    for ly in pick:  # integer inputs on any compute layer of the node = it runs quantized
        dtypes = list(ly.get("inputs") or ly.get("constants") or [])
        hit = next((d for d in dtypes if d in _INTEGER), None)
        if hit:
            return hit, str(ly.get("name"))
    first = pick[0]
    dtypes = list(first.get("inputs") or first.get("constants") or [])
    prec = "FP16" if "FP16" in dtypes else (dtypes[0] if dtypes else None)
    return prec, str(first.get("name"))


def precision_report(model: Any, layers: Sequence[Mapping[str, Any]] | None,
                     shapes: Mapping[str, Sequence[int]] | None = None) -> PrecisionReport:
    """Match compiled ``layers`` to the compute nodes of an ONNX ``model``.

    Args:
        model: ``onnx.ModelProto`` that was built.
        layers: :func:`parse_layers_block` / :func:`inspector_layers` output; empty or None when the
            build gave no layer list (the report is then marked unavailable).
        shapes: Input shapes (the optimization profile's opt shapes) to weigh each node by its MACs;
            ``None``: no MAC counts.

    Returns:
        The report.
    """
    from trtopt.onnx.graph import module_name
    from trtopt.onnx.macs import mac_share
    from trtopt.placement import compute_nodes

    # the ONNX parser names a layer after its node, or node_of_<first output> for an unnamed one
    macs = {(m.name if m.name != f"{m.op_type}:{m.output}" else f"node_of_{m.output}"): m.macs
            for m in mac_share(model, shapes).nodes if not m.graph} if shapes else {}
    report = PrecisionReport(available=bool(layers))
    for node, quantized in compute_nodes(model.graph):
        trt_name = node.name or f"node_of_{node.output[0]}"
        compiled, layer = _compiled(layers or [], trt_name) if layers else (None, None)
        report.nodes.append({"node": trt_name, "op": node.op_type, "module": module_name(node.name or ""),
                             "quantized": quantized, "compiled": compiled, "layer": layer,
                             **({"macs": macs.get(trt_name)} if shapes else {})})
    return report
