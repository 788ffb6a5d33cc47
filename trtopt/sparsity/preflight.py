"""Pre-flight verdict: will TensorRT on a given GPU run this model's 2:4 layers sparse?

Sparse tensor cores exist from Ampere (SM 8.0) on: A100 (8.0), A10/RTX 30 (8.6), Orin (8.7),
Ada (8.9), Hopper (9.0), Blackwell. Turing (T4, SM 7.5) and Volta have none, so there 2:4 gives
no speedup at all. Even on Ampere+ TensorRT times sparse against dense kernels per layer and
keeps the faster; below roughly 256 channels it usually keeps dense (TensorRT issues #3849,
#4065), and sparse math needs FP16 or INT8 precision on the layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.sparsity.onnx_check import SMALL_CHANNELS, OnnxLayer, check_onnx_layers

#: --gpu name -> (display name, compute capability)
GPUS: dict[str, tuple[str, tuple[int, int]]] = {
    "t4": ("NVIDIA T4 (Turing)", (7, 5)),
    "orin": ("Jetson AGX Orin (Ampere GPU)", (8, 7)),
    "a100": ("NVIDIA A100 (Ampere)", (8, 0)),
    "h100": ("NVIDIA H100 (Hopper)", (9, 0)),
}
GPU_CHOICES = (*GPUS, "auto")


@dataclass
class Preflight:
    """Verdict for one target GPU.

    Attributes:
        gpu: Display name of the target.
        compute_capability: ``"8.0"`` etc., or ``None`` when unknown.
        sparse_tensor_cores: True / False, or ``None`` when the GPU is unknown.
        verdict: ``no_speedup``, ``possible_speedup``, ``unlikely_speedup``, ``nothing_to_accelerate``
            or ``unknown``.
        message: One plain sentence.
        warnings: Per-layer warnings (small layers, non-compliant large layers, precision).
    """

    gpu: str
    compute_capability: str | None
    sparse_tensor_cores: bool | None
    verdict: str
    message: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class SparsityReport:
    """Result of :func:`inspect_sparsity`.

    Attributes:
        model: Path or description of the inspected model.
        layers: One :class:`OnnxLayer` per constant-weight Conv/Gemm/MatMul.
        summary: ``eligible``, ``compliant``, ``sparse_flop_share`` and more.
        preflight: The GPU verdict.
    """

    model: str
    layers: list[OnnxLayer]
    summary: dict[str, Any]
    preflight: Preflight

    def to_dict(self) -> dict[str, Any]:
        """The JSON object printed by ``trtopt inspect sparsity --json``."""
        return {
            "model": self.model,
            "layers": [ly.to_dict() for ly in self.layers],
            "summary": self.summary,
            "preflight": self.preflight.__dict__,
        }


def resolve_gpu(gpu: str) -> tuple[str, tuple[int, int] | None]:
    """Map ``--gpu`` to ``(display name, capability)``; ``auto`` asks torch.cuda when installed.

    Args:
        gpu: One of :data:`GPU_CHOICES`.

    Returns:
        Name and compute capability (``None`` when it cannot be determined).
    """
    key = gpu.lower()
    if key in GPUS:
        return GPUS[key]
    if key != "auto":
        raise ConfigError(f"unknown --gpu '{gpu}' (choose from {', '.join(GPU_CHOICES)})")
    from trtopt.optional import is_installed

    if is_installed("torch"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))
    return "unknown (no CUDA GPU visible here)", None


def preflight(layers: list[OnnxLayer], gpu: str = "auto") -> Preflight:
    """Judge whether TensorRT on ``gpu`` will run the compliant layers with sparse kernels.

    Args:
        layers: Output of :func:`check_onnx_layers`.
        gpu: Target (``t4``, ``orin``, ``a100``, ``h100``) or ``auto``.

    Returns:
        The verdict with per-layer warnings.
    """
    name, cc = resolve_gpu(gpu)
    ccs = f"{cc[0]}.{cc[1]}" if cc else None
    compliant = [ly for ly in layers if ly.compliant]
    warnings = [
        f"{ly.node}: {ly.reduction} in x {ly.out_channels} out is below ~{SMALL_CHANNELS} channels; "
        "TensorRT usually keeps dense kernels"
        for ly in compliant
        if not ly.large_enough
    ]
    warnings += [
        f"{ly.node}: eligible and large but not 2:4 ({ly.compliant_group_share:.0%} of groups comply)"
        for ly in layers
        if ly.eligible and ly.large_enough and not ly.compliant
    ]
    if cc is not None and cc < (8, 0):
        return Preflight(
            name,
            ccs,
            False,
            "no_speedup",
            f"{name} (SM {ccs}) has no sparse tensor cores: TensorRT runs every layer dense there, "
            "so 2:4 sparsity gives no speedup on this GPU (Ampere SM 8.0 or newer is needed).",
            warnings,
        )
    if not compliant:
        return Preflight(
            name,
            ccs,
            None if cc is None else True,
            "nothing_to_accelerate",
            "no layer is 2:4 compliant, so there is nothing for sparse kernels to run; prune the "
            "model first (trtopt prune).",
            warnings,
        )
    big = [ly for ly in compliant if ly.large_enough]
    prefix = (
        f"{name} (SM {ccs}) has sparse tensor cores"
        if cc is not None
        else f"target GPU {name}: sparse tensor cores need Ampere (SM 8.0) or newer; T4/Volta get no speedup"
    )
    if big:
        verdict = "possible_speedup" if cc is not None else "unknown"
        msg = (
            f"{prefix}; {len(big)} of {len(compliant)} compliant layers are large enough that TensorRT may "
            "pick sparse kernels (check the build log's '(Sparsity)' lines; enable FP16 or INT8)."
        )
    else:
        verdict = "unlikely_speedup" if cc is not None else "unknown"
        msg = (
            f"{prefix}; but all {len(compliant)} compliant layers have fewer than "
            f"~{SMALL_CHANNELS} channels, where TensorRT usually keeps dense kernels: "
            "expect little or no speedup."
        )
    warnings.append(
        "sparse kernels need FP16 or INT8 precision on the layer (a Q/DQ or FP16 graph from `trtopt quantize`, "
        "or `trtopt build --precision fp16|int8` on TensorRT 10) and SPARSE_WEIGHTS (`trtopt build --sparsity`)"
    )
    return Preflight(name, ccs, None if cc is None else True, verdict, msg, warnings)


def _torch_layers(model) -> list[OnnxLayer]:
    """Conv/Linear/attention-projection weights of a torch module as :class:`OnnxLayer` records.

    Groups run along axis 1; FLOPs are counted as 2 x weights.
    """
    from trtopt.sparsity.masks import compliant_group_share
    from trtopt.sparsity.prune import layer_weights

    out = []
    for name, kind, mod, weight, never in layer_weights(model):
        if never:
            continue
        w = weight.detach()
        red, k = w.shape[1], w.shape[0]
        groups = getattr(mod, "groups", 1)
        reason = (
            "grouped/depthwise conv"
            if groups != 1
            else ""
            if red % 4 == 0
            else f"pruning axis length {red} is not a multiple of 4"
        )
        share = compliant_group_share(w, 1) if not reason else 0.0
        compliant = not reason and share == 1.0
        if not reason and not compliant:
            reason = (
                f"not 2:4: {100 * (1 - share):.1f}% of groups of 4 along axis 1 have more than 2 non-zeros"
            )
        out.append(
            OnnxLayer(
                node=name,
                op=kind,
                weight=name if kind == "MultiheadAttention" else f"{name}.weight",
                shape=list(w.shape),
                axis=1,
                eligible=groups == 1 and red % 4 == 0,
                compliant=compliant,
                reason=reason,
                reduction=red,
                out_channels=k,
                flops=2 * w.numel(),
                compliant_group_share=round(share, 6),
                large_enough=min(red, k) >= SMALL_CHANNELS,
                path=[],
            )
        )
    return out


def inspect_sparsity(model_or_path: Any, gpu: str = "auto") -> SparsityReport:
    """Report the 2:4 status of every Conv/Gemm/MatMul weight and a GPU pre-flight verdict.

    Args:
        model_or_path: An ``.onnx`` path, an ``onnx.ModelProto``, or a ``torch.nn.Module``.
        gpu: Target GPU (``t4``, ``orin``, ``a100``, ``h100``) or ``auto``.

    Returns:
        The :class:`SparsityReport`.

    Raises:
        InputError: Missing or corrupt model file, or an unsupported object.
        ConfigError: Unknown ``gpu``.
    """
    resolve_gpu(gpu)  # validate early, before loading a large model
    if isinstance(model_or_path, (str, os.PathLike)):
        from trtopt.onnx.io import load_onnx

        p = Path(model_or_path)
        if p.suffix.lower() != ".onnx" and p.is_file():
            raise InputError(f"{p} is not an .onnx file")
        model, label = load_onnx(p), str(p)
        layers, summary = check_onnx_layers(model)
    elif type(model_or_path).__name__ == "ModelProto":
        layers, summary = check_onnx_layers(model_or_path)
        label = model_or_path.graph.name or "<onnx model>"
    elif hasattr(model_or_path, "named_modules"):
        layers = _torch_layers(model_or_path)
        total = sum(ly.flops for ly in layers)
        summary = {
            "layers": len(layers),
            "eligible": sum(ly.eligible for ly in layers),
            "compliant": sum(ly.compliant for ly in layers),
            "sparse_flop_share": round(sum(ly.flops for ly in layers if ly.compliant) / total, 6)
            if total
            else 0.0,
        }
        label = type(model_or_path).__name__
    else:
        raise InputError(
            f"cannot inspect a {type(model_or_path).__name__}: pass an .onnx path, ModelProto or torch module"
        )
    return SparsityReport(model=label, layers=layers, summary=summary, preflight=preflight(layers, gpu))
