"""What TensorRT for RTX compiles for each target GPU, known before a build (measured, not guessed).

Measured with TensorRT for RTX 1.7.1 ahead of time on a CPU-only machine, one engine per target, on
trtopt's Q/DQ graphs and small graphs of each pattern (``bench/rtx_targets.py``,
``bench/results/rtx_targets/``; per-layer precisions from the ``Layers:`` block):

- **Every target**: a ConvTranspose with Q/DQ inputs compiles in float (no INT8 deconvolution in
  TensorRT-RTX 1.7, for per-tensor and per-channel weight scales on either axis).
- **Ampere, Ada, Blackwell** (sm80, sm86, sm89, sm120, sm121): no other limit; the quantized
  Conv/Gemm/MatMul of trtopt's graphs compile with INT8 inputs.
- **Turing** (sm75: T4, Quadro RTX, GeForce RTX 20):

  * *no INT8 convolution*: a Conv with Q/DQ inputs compiles as a float conv over dequantized weights
    (FP16 in an FP16-typed graph, FP32 otherwise), for every placement, channel count and size tried;
  * *no FP32 GEMM*: an FP32-typed Gemm/MatMul, quantized or not, fails the whole build (``Cannot
    compile operation ... for Turing (SM75): FP32 GEMM is not supported``), because the check runs on
    the op's float type before Q/DQ fusion. The same op typed FP16 compiles, and with Q/DQ inputs in
    INT8; so for sm75 trtopt builds each FP32 Gemm/MatMul of a Q/DQ or FP16 graph as an FP16 island
    (:func:`fp16_islands`: Cast to FP16 on its inputs, Cast back to FP32 on its output);
  * an engine listing sm75 among several targets is compiled under these limits for all of them
    (its one layer list shows float convs), so build sm75 as an engine of its own.
- **Not TensorRT-RTX targets**: Jetson (sm87 Orin, sm72 Xavier, sm53/62 Nano/TX2; TensorRT-RTX has no
  aarch64 wheel and no Jetson support), Volta sm70 and Hopper sm90: build on the device with TensorRT
  10 (JetPack 6 ships 10.3) or 11, ``--backend tensorrt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.errors import ConfigError
from trtopt.log import get_logger

log = get_logger(__name__)

#: Compute capability -> (GPUs, TensorRT-RTX target?).
GPUS = {"SM75": ("Turing: T4, Quadro RTX, GeForce RTX 20", True), "SM80": ("Ampere: A100, A30", True),
        "SM86": ("Ampere: A10, A40, RTX A-series, GeForce RTX 30", True),
        "SM89": ("Ada: L4, L40, GeForce RTX 40", True), "SM120": ("Blackwell: GeForce RTX 50, RTX PRO", True),
        "SM121": ("Blackwell: DGX Spark (GB10)", True), "SM53": ("Jetson Nano", False),
        "SM62": ("Jetson TX2", False), "SM72": ("Jetson AGX Xavier / Xavier NX", False),
        "SM87": ("Jetson AGX Orin / Orin NX / Orin Nano", False), "SM70": ("Volta: V100", False),
        "SM90": ("Hopper: H100, H200, GH200", False)}
_JETSON = ("SM53", "SM62", "SM72", "SM87")
#: What Turing cannot compile with TensorRT-RTX, and where INT8 convolutions run on a T4.
TURING_CONV = ("Turing has no INT8 convolution in TensorRT-RTX; for INT8 convolutions on a T4 build on it with "
               "TensorRT 10 (--backend tensorrt)")
TURING_GEMM = "Turing has no FP32 GEMM in TensorRT-RTX"
_FP16_MAX = 65504.0


def normalize_cc(raw: str) -> str:
    """``"sm87"`` / ``"8.7"`` / ``"SM_87"`` -> ``"SM87"`` (not checked against any list)."""
    t = raw.strip().upper().replace("_", "")
    return t if t.startswith("SM") else "SM" + t.replace(".", "")


def runtime_instead(cc: str) -> str:
    """Which TensorRT builds for a compute capability that TensorRT-RTX does not target (one sentence)."""
    gpus = GPUS.get(cc, ("this GPU", False))[0]
    if cc in _JETSON:
        return (f"{cc.lower()} ({gpus}) is not a TensorRT for RTX target: TensorRT-RTX has no aarch64 wheel and no "
                "Jetson support; build on the Jetson with the TensorRT of its JetPack (JetPack 6: TensorRT 10.3), "
                "`trtopt build MODEL.onnx --backend tensorrt`")
    return (f"{cc.lower()} ({gpus}) is not a TensorRT for RTX target; build on that GPU with TensorRT 10/11, "
            "`trtopt build MODEL.onnx --backend tensorrt`")


def _elem_types(model: Any) -> dict[str, int]:
    """Tensor name -> ONNX elem type, from shape inference (empty where it fails)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # an uninferable graph simply gets no predictions
        inferred = model
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _fits_fp16(model: Any, node: Any) -> bool:
    """Whether every initializer input of ``node`` is inside the FP16 range (unreadable data counts as fitting)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for name in node.input:
        if name in inits:
            try:
                a = numpy_helper.to_array(inits[name])
            except Exception:  # external data not loaded: the builder will say
                continue
            if a.size and np.issubdtype(a.dtype, np.floating) and float(np.abs(a).max()) > _FP16_MAX:
                return False
    return True


@dataclass
class TuringCheck:
    """What a graph meets on sm75 with TensorRT-RTX (see the module docstring).

    Attributes:
        float_convs: Quantized Conv nodes, which compile in float there (ConvTranspose: on every
            target, :func:`quantized_deconvs`).
        fp32_gemms: FP32-typed Gemm/MatMul nodes (``name``, ``quantized``) that fail unless built as FP16.
        beyond_fp16: Those of ``fp32_gemms`` whose constant inputs exceed the FP16 range (cannot be islands).
        quantized: Quantized compute nodes in the graph.
        fp32_graph: The graph is all FP32 (no Q/DQ, no FP16): its FP32 GEMMs are not turned into FP16
            (that would change an FP32 build's precision); they cannot compile on sm75.
    """

    float_convs: list[str] = field(default_factory=list)
    fp32_gemms: list[tuple[str, bool]] = field(default_factory=list)
    beyond_fp16: list[str] = field(default_factory=list)
    quantized: int = 0
    fp32_graph: bool = False

    @property
    def islands(self) -> list[str]:
        """Gemm/MatMul nodes trtopt builds in FP16 for sm75."""
        return [] if self.fp32_graph else [n for n, _q in self.fp32_gemms if n not in self.beyond_fp16]

    @property
    def cannot(self) -> list[str]:
        """Gemm/MatMul nodes that cannot compile on sm75 (FP32 graph, or weights beyond FP16)."""
        return [n for n, _q in self.fp32_gemms] if self.fp32_graph else list(self.beyond_fp16)

    def int8_expected(self, deconvs: int = 0) -> int:
        """Quantized nodes that can compile INT8 on sm75 (``deconvs``: quantized ConvTranspose, float everywhere)."""
        lost = sum(1 for n, q in self.fp32_gemms if q and n in self.cannot)
        return self.quantized - len(self.float_convs) - deconvs - lost

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifests, ``inspect targets --json``)."""
        return {"float_convs": self.float_convs, "fp16_islands": self.islands, "cannot_compile": self.cannot,
                "quantized": self.quantized, "int8_expected": self.int8_expected()}


def turing_check(model: Any) -> TuringCheck:
    """Check an ``onnx.ModelProto`` against the sm75 limits of TensorRT-RTX (top-level graph)."""
    from onnx import TensorProto

    from trtopt.onnx.precision import computes_fp16, has_qdq
    from trtopt.placement import compute_nodes

    types = _elem_types(model)
    qdq = has_qdq(model)
    out = TuringCheck(fp32_graph=not qdq and not computes_fp16(model))
    for node, quantized in compute_nodes(model.graph):
        name = node.name or f"node_of_{node.output[0]}"
        out.quantized += int(quantized)
        if node.op_type == "ConvTranspose":
            continue
        if node.op_type == "Conv":
            if quantized:
                out.float_convs.append(name)
        elif types.get(node.input[0]) == TensorProto.FLOAT:
            out.fp32_gemms.append((name, quantized))
            if not _fits_fp16(model, node):
                out.beyond_fp16.append(name)
    return out


def fp16_islands(model: Any, names: list[str]) -> Any:
    """A copy of ``model`` with each named FP32 Gemm/MatMul computed in FP16 between Casts.

    Every input (activation, weight, bias; a DequantizeLinear output too, which TensorRT-RTX still
    fuses into an INT8 GEMM) gets a ``Cast`` to FP16, and the node's output a ``Cast`` back to FP32
    under its original name, so graph outputs and every consumer keep their names and types.

    Args:
        model: ``onnx.ModelProto``; not modified.
        names: Node names as :func:`turing_check` gives them (``node_of_<output>`` for unnamed nodes).

    Returns:
        The rewritten model.
    """
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    wanted = set(names)
    nodes = []
    for node in out.graph.node:
        name = node.name or f"node_of_{node.output[0]}"
        if name not in wanted:
            nodes.append(node)
            continue
        for i, x in enumerate(node.input):
            if x:
                cast = f"{x}__fp16_for_{name}"
                nodes.append(helper.make_node("Cast", [x], [cast], to=TensorProto.FLOAT16, name=cast))
                node.input[i] = cast
        y = node.output[0]
        node.output[0] = f"{y}__fp16"
        nodes += [node, helper.make_node("Cast", [f"{y}__fp16"], [y], to=TensorProto.FLOAT, name=f"{y}__fp32")]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def quantized_deconvs(model: Any) -> list[str]:
    """Quantized ConvTranspose nodes of ``model``: they compile in float on every TensorRT-RTX target."""
    from trtopt.placement import compute_nodes

    return [n.name or f"node_of_{n.output[0]}" for n, q in compute_nodes(model.graph)
            if q and n.op_type == "ConvTranspose"]


def deconv_note(deconvs: list[str], quantized: int) -> str:
    """The line saying that quantized ConvTranspose layers compile in float with TensorRT-RTX."""
    return (f"{len(deconvs)} of {quantized} quantized layers are ConvTranspose, which compile in float on every "
            f"TensorRT-RTX target (no INT8 deconvolution in TensorRT-RTX): {', '.join(deconvs[:4])}"
            f"{' ...' if len(deconvs) > 4 else ''}")


def turing_notes(check: TuringCheck) -> list[str]:
    """One line per sm75 limit the graph meets (empty when none)."""
    notes = []
    if check.float_convs:
        notes.append(f"sm75: {len(check.float_convs)} of {check.quantized} quantized layers are convolutions, which "
                     f"compile in float ({TURING_CONV})")
    if check.islands:
        quantized = {n for n, q in check.fp32_gemms if q}
        q_islands = [n for n in check.islands if n in quantized]
        f_islands = [n for n in check.islands if n not in quantized]
        if q_islands:
            notes.append(f"sm75: {len(q_islands)} quantized FP32-typed Gemm/MatMul get FP16 as their float type "
                         f"around the INT8 GEMM ({TURING_GEMM}; they still compile INT8): "
                         f"{', '.join(q_islands[:4])}{' ...' if len(q_islands) > 4 else ''}")
        if f_islands:
            notes.append(f"sm75: {len(f_islands)} float FP32 Gemm/MatMul compute in FP16 ({TURING_GEMM}): "
                         f"{', '.join(f_islands[:4])}{' ...' if len(f_islands) > 4 else ''}")
    if check.cannot:
        why = ("build an FP16 model (`trtopt quantize MODEL.onnx --fp16`) or a Q/DQ model for sm75" if check.fp32_graph
               else "their weights exceed the FP16 range")
        notes.append(f"sm75: {len(check.cannot)} FP32 Gemm/MatMul cannot compile ({TURING_GEMM}; {why}): "
                     f"{', '.join(check.cannot[:4])}{' ...' if len(check.cannot) > 4 else ''}")
    return notes


def target_rows(model: Any, targets: list[str]) -> list[dict[str, Any]]:
    """Per target: GPUs, whether TensorRT-RTX builds for it, known limits and the runtime to use instead.

    Returns:
        ``[{"target", "gpus", "rtx", "quantized", "int8_expected" (None: no known limit), "notes"}]``.
    """
    from trtopt.placement import compute_nodes

    quantized = sum(1 for _n, q in compute_nodes(model.graph) if q)
    deconvs = quantized_deconvs(model)
    general = [deconv_note(deconvs, quantized)] if deconvs else []
    rows = []
    for cc in targets:
        gpus, rtx = GPUS.get(cc, ("", False))
        row: dict[str, Any] = {"target": cc, "gpus": gpus, "rtx": rtx, "quantized": quantized,
                               "int8_expected": quantized - len(deconvs) if deconvs else None, "notes": list(general)}
        if not rtx:
            row.update(int8_expected=None, notes=[runtime_instead(cc)])
        elif cc == "SM75":
            check = turing_check(model)
            row.update(int8_expected=check.int8_expected(len(deconvs)), notes=turing_notes(check) + general,
                       turing=check.to_dict())
        rows.append(row)
    return rows


def prepare_for_targets(onnx_bytes: bytes, targets: tuple[str, ...], strict: bool, what: str
                        ) -> tuple[bytes, dict[str, Any] | None]:
    """The bytes TensorRT-RTX parses for ``targets``, and the target section of the manifest.

    Says up front (warnings) which quantized layers will compile in float (ConvTranspose on every
    target; with sm75, convolutions too), builds sm75's FP32 Gemm/MatMul as FP16 islands
    (:func:`fp16_islands`), and refuses what cannot compile.

    Args:
        onnx_bytes: Serialized model (external data not needed).
        targets: ``ComputeCapability`` names of the build (empty: TensorRT-RTX's defaults, sm80 and later).
        strict: ``--strict``: a quantized layer that will compile in float is an error before building.
        what: Model name for messages.

    Returns:
        ``(bytes to parse, {"SM75": TuringCheck.to_dict() (with sm75), "float_deconvs": [...], "notes": [...]}``
        or None when no limit applies).

    Raises:
        ConfigError: A Gemm/MatMul that cannot compile on sm75, or float layers under ``strict``.
    """
    import onnx

    from trtopt.placement import compute_nodes

    model = onnx.load_from_string(onnx_bytes)
    deconvs = quantized_deconvs(model)
    quantized = sum(1 for _n, q in compute_nodes(model.graph) if q)
    notes = [deconv_note(deconvs, quantized)] if deconvs else []
    section: dict[str, Any] = {"float_deconvs": deconvs}
    check = turing_check(model) if "SM75" in targets else None
    if check is not None:
        turing = turing_notes(check)
        if check.cannot:
            raise ConfigError(f"{what}: {turing[-1]}")
        if check.float_convs and len(targets) > 1:
            turing.append("an engine listing sm75 with other targets compiles every target under the sm75 limits: "
                          "build sm75 as an engine of its own (--compute-capability sm75)")
        notes = [*turing, *notes]
        section["SM75"] = check.to_dict()
    if strict and (deconvs or (check is not None and check.float_convs)):
        raise ConfigError(f"{what}: --strict: {notes[0]}")
    if not notes:
        return onnx_bytes, None
    for note in notes:
        log.warning("%s: %s", what, note)
    if check is not None and check.islands:
        onnx_bytes = fp16_islands(model, check.islands).SerializeToString()
    return onnx_bytes, {**section, "notes": notes}
