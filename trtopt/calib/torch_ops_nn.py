"""ONNX neural-network ops as PyTorch functions: conv, pooling, GEMM, normalisation, activations.

Registers into :data:`trtopt.calib.torch_ops.OPS` on import. Padding follows ONNX: explicit
``pads`` (begin values, then end values; asymmetric ones are applied with ``F.pad``) or
``auto_pad`` ``SAME_UPPER`` / ``SAME_LOWER`` / ``VALID`` computed from the input shape.
Float math stays float32; the executor disables TF32 around a run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from trtopt.calib.torch_ops import NodeCall, axes_of, op, unsupported

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial(call: NodeCall, n: int) -> None:
    if n not in _CONV:
        raise unsupported(call.op_type, call.name, f"{n} spatial dims")


def _pads(attrs: dict[str, Any], shape: tuple[int, ...], kernel: list[int], strides: list[int],
          dilations: list[int]) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial dim from ``pads`` or ``auto_pad``."""
    n = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads") or [0] * (2 * n))
        return pads[:n], pads[n:]
    if auto == "VALID":
        return [0] * n, [0] * n
    begin, end = [], []
    for size, k, s, d in zip(shape, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2  # SAME_UPPER puts the extra pad at the end
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end


def _pad_spec(begin: list[int], end: list[int]) -> list[int]:
    spec: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        spec += [b, e]
    return spec


def _geometry(x: torch.Tensor, attrs: dict[str, Any], kernel: list[int]) -> tuple[list[int], list[int], list, list]:
    n = len(kernel)
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    begin, end = _pads(attrs, tuple(x.shape[2:]), kernel, strides, dilations)
    return strides, dilations, begin, end


@op("Conv")
def _conv(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    _spatial(call, len(kernel))
    strides, dilations, begin, end = _geometry(x, attrs, kernel)
    if begin != end:
        x, begin = F.pad(x, _pad_spec(begin, end)), [0] * len(kernel)
    return _CONV[len(kernel)](x, w, b, strides, begin, dilations, attrs.get("group", 1))


@op("ConvTranspose")
def _conv_transpose(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    if attrs.get("output_shape") or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise unsupported(call.op_type, call.name, "output_shape/auto_pad")
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    n = len(kernel)
    _spatial(call, n)
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * (2 * n))
    out_pad = list(attrs.get("output_padding") or [0] * n)
    group = attrs.get("group", 1)
    if pads[:n] == pads[n:]:
        return _CONV_T[n](x, w, b, strides, pads[:n], out_pad, group, dilations)
    # asymmetric pads: full transposed conv, extend by output_padding, then crop begin/end
    y = _CONV_T[n](x, w, None, strides, 0, 0, group, dilations)
    y = F.pad(y, _pad_spec([0] * n, out_pad))
    index = [slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[n + i]) for i in range(n)]
    y = y[tuple(index)]
    return y if b is None else y + b.reshape(1, -1, *([1] * n))


@op("MaxPool")
def _max_pool(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, kernel = args[0], list(attrs["kernel_shape"])
    _spatial(call, len(kernel))
    if call.num_outputs > 1 or attrs.get("storage_order", 0):
        raise unsupported(call.op_type, call.name, "an Indices output")
    strides, dilations, begin, end = _geometry(x, attrs, kernel)
    ceil = bool(attrs.get("ceil_mode", 0))
    if begin != end or any(2 * p > (k - 1) * d + 1 for p, k, d in zip(begin, kernel, dilations)):
        x, begin = F.pad(x, _pad_spec(begin, end), value=-math.inf), [0] * len(kernel)
    return _MAXPOOL[len(kernel)](x, kernel, strides, begin, dilations, ceil_mode=ceil)


@op("AveragePool")
def _avg_pool(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, kernel = args[0], list(attrs["kernel_shape"])
    _spatial(call, len(kernel))
    if any(d != 1 for d in attrs.get("dilations") or []):
        raise unsupported(call.op_type, call.name, "dilations")
    strides, _, begin, end = _geometry(x, attrs, kernel)
    ceil, include = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))
    pool = _AVGPOOL[len(kernel)]
    if begin == end and all(2 * p <= k for p, k in zip(begin, kernel)):
        return pool(x, kernel, strides, begin, ceil, include)
    # general pads: average the zero-padded input, then rescale by the share of real elements
    spec = _pad_spec(begin, end)
    y = pool(F.pad(x, spec), kernel, strides, 0, ceil)
    if include:
        return y
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    return y / pool(F.pad(ones, spec), kernel, strides, 0, ceil)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    dims = tuple(range(2, x.dim()))
    return x.mean(dims, keepdim=True) if call.op_type == "GlobalAveragePool" else x.amax(dims, keepdim=True)


@op("Gemm")
def _gemm(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if c is None or beta == 0:
        y = torch.mm(a, b)
        return y if alpha == 1.0 else y * alpha
    return torch.addmm(c, a, b, beta=beta, alpha=alpha)


@op("MatMul")
def _matmul(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.matmul(args[0], args[1])


@op("BatchNormalization")
def _batch_norm(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    if attrs.get("training_mode", 0):
        raise unsupported(call.op_type, call.name, "training_mode=1")
    x, scale, bias, mean, var = args[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


@op("InstanceNormalization")
def _instance_norm(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return F.instance_norm(args[0], weight=args[1], bias=args[2], eps=attrs.get("epsilon", 1e-5))


@op("LayerNormalization")
def _layer_norm(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> Any:
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis, eps = attrs.get("axis", -1) % x.dim(), attrs.get("epsilon", 1e-5)
    shape = tuple(x.shape[axis:])
    if call.num_outputs == 1 and tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, eps)
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(((x - mean) ** 2).mean(dims, keepdim=True) + eps)
    y = (x - mean) * inv_std * scale
    y = y if bias is None else y + bias
    return (y, mean, inv_std)[: call.num_outputs]


def _softmax_like(call: NodeCall, x: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor:
    kind = call.op_type
    if call.opset >= 13:
        axis = attrs.get("axis", -1)
        return torch.softmax(x, axis) if kind == "Softmax" else torch.log_softmax(x, axis)
    # before opset 13 the input is coerced to 2-D at ``axis`` and normalised over the second dim
    axis = attrs.get("axis", 1) % max(x.dim(), 1)
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    out = torch.softmax(flat, 1) if kind == "Softmax" else torch.log_softmax(flat, 1)
    return out.reshape(x.shape)


@op("Softmax", "LogSoftmax")
def _softmax(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _softmax_like(call, args[0], attrs)


@op("Clip", params=())
def _clip(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    if call.opset < 11:
        return torch.clamp(x, attrs.get("min", -math.inf), attrs.get("max", math.inf))
    lo = args[1] if len(args) > 1 else None
    hi = args[2] if len(args) > 2 else None
    return x if lo is None and hi is None else torch.clamp(x, lo, hi)


@op("LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid", "HardSwish", "Gelu", "Mish")
def _activation(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, kind, alpha = args[0], call.op_type, attrs.get("alpha")
    if kind == "LeakyRelu":
        return F.leaky_relu(x, 0.01 if alpha is None else alpha)
    if kind == "Elu":
        return F.elu(x, 1.0 if alpha is None else alpha)
    if kind == "Celu":
        return F.celu(x, 1.0 if alpha is None else alpha)
    if kind == "Selu":
        a, g = attrs.get("alpha", 1.67326319217681884765625), attrs.get("gamma", 1.05070102214813232421875)
        return g * torch.where(x > 0, x, a * (torch.exp(x) - 1))
    if kind == "ThresholdedRelu":
        return torch.where(x > (1.0 if alpha is None else alpha), x, torch.zeros_like(x))
    if kind == "HardSigmoid":
        return (x * (0.2 if alpha is None else alpha) + attrs.get("beta", 0.5)).clamp(0.0, 1.0)
    if kind == "HardSwish":
        return x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0)  # ONNX: x * HardSigmoid(x, 1/6, 0.5)
    if kind == "Mish":
        return F.mish(x)
    return F.gelu(x, approximate=attrs.get("approximate", "none"))


@op("PRelu")
def _prelu(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, slope = args
    return torch.where(x < 0, x * slope, x)


_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp")


@op(*_REDUCE, params=(1,))
def _reduce(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, axes, keep = args[0], axes_of(args, attrs), bool(attrs.get("keepdims", 1))
    if (not axes and attrs.get("noop_with_empty_axes", 0)) or x.dim() == 0:
        return x
    dims = tuple(sorted(a % x.dim() for a in axes)) if axes else tuple(range(x.dim()))
    kind = call.op_type[6:]
    if kind == "Mean":
        return x.mean(dims, keepdim=keep)
    if kind in ("Max", "Min"):
        return x.amax(dims, keepdim=keep) if kind == "Max" else x.amin(dims, keepdim=keep)
    if kind == "Prod":
        for d in reversed(dims):
            x = x.prod(d, keepdim=keep)
        return x
    if kind == "LogSumExp":
        return torch.logsumexp(x, dims, keepdim=keep)
    src = x.abs() if kind == "L1" else x * x if kind in ("L2", "SumSquare") else x
    out = src.sum(dims, keepdim=keep).to(x.dtype)  # integer sums keep the input type
    return out.sqrt() if kind == "L2" else out


@op("ArgMax", "ArgMin")
def _argmax(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, axis, keep = args[0], attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    last = attrs.get("select_last_index", 0)
    if last:
        x = x.flip(axis)
    out = x.argmax(axis, keepdim=keep) if call.op_type == "ArgMax" else x.argmin(axis, keepdim=keep)
    return x.shape[axis] - 1 - out if last else out


@op("TopK", params=(1,))
def _topk(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(args[1].reshape(-1)[0].item()) if call.opset >= 10 else attrs["k"]
    values, indices = torch.topk(args[0], k, dim=attrs.get("axis", -1), largest=bool(attrs.get("largest", 1)),
                                 sorted=bool(attrs.get("sorted", 1)))
    return values, indices
