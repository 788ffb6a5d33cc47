"""ONNX ops as PyTorch functions: element-wise, logic, shape and tensor manipulation ops.

Each op is ``fn(call, args, attrs) -> tensor | sequence of tensors`` registered in :data:`OPS`
under its ONNX op type; ``args`` holds one tensor per node input (``None`` for an omitted
optional input) and ``attrs`` the parsed attributes. :data:`PARAM_INPUTS` names the inputs an
op reads as host integers (shapes, axes, slice bounds): the executor leaves those where they
were computed so shape arithmetic on a GPU run needs no device round trip.
Conv, pooling, normalisation and activation ops live in :mod:`trtopt.calib.torch_ops_nn`.

Imports torch at module level: only the torch histogram collector imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trtopt.errors import InputError


@dataclass(frozen=True)
class NodeCall:
    """What an op function needs to know about its node besides inputs and attributes.

    Attributes:
        name: Node name (or its first output when unnamed), for error messages.
        op_type: ONNX op type.
        opset: Default-domain opset of the model (semantics changed across opsets).
        num_outputs: Number of declared outputs (trailing optional outputs may be unused).
    """

    name: str
    op_type: str
    opset: int
    num_outputs: int


OpFn = Callable[[NodeCall, list[Any], dict[str, Any]], Any]
#: ONNX op type -> implementation
OPS: dict[str, OpFn] = {}
#: ONNX op type -> indices of inputs read as host integers / scalars
PARAM_INPUTS: dict[str, frozenset[int]] = {}

#: ONNX TensorProto elem type -> torch dtype
TORCH_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.uint32, 13: torch.uint64,
    16: torch.bfloat16,
}


def unsupported(op_type: str, node: str, detail: str = "") -> InputError:
    """The one-line error for an op (or op variant) the torch collector cannot run."""
    what = f"op {op_type} (node {node}){' with ' + detail if detail else ''}"
    return InputError(f"{what} is not supported by the torch collector; use collector='onnxruntime'")


def op(*names: str, params: Sequence[int] = ()) -> Callable[[OpFn], OpFn]:
    """Register the decorated function for each ONNX op type in ``names``."""

    def deco(fn: OpFn) -> OpFn:
        for n in names:
            OPS[n] = fn
            PARAM_INPUTS[n] = frozenset(params)
        return fn

    return deco


def ints(t: torch.Tensor) -> list[int]:
    """A 0-d or 1-d integer tensor as a list of Python ints (a host sync if ``t`` is on a GPU)."""
    return [int(v) for v in t.reshape(-1).tolist()]


def torch_dtype(elem_type: int, call: NodeCall) -> torch.dtype:
    """Torch dtype of an ONNX elem type, or the unsupported-op error."""
    if elem_type not in TORCH_DTYPES:
        raise unsupported(call.op_type, call.name, f"tensor type {elem_type}")
    return TORCH_DTYPES[elem_type]


def axes_of(args: list[Any], attrs: dict[str, Any], index: int = 1) -> list[int] | None:
    """Axes from input ``index`` (newer opsets) or the ``axes`` attribute (older ones)."""
    if len(args) > index and args[index] is not None:
        return ints(args[index])
    axes = attrs.get("axes")
    return None if axes is None else list(axes)


def _is_int(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and t.dtype != torch.bool


# -- element-wise ------------------------------------------------------------------------------

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Erf": torch.erf,
    "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu, "Not": torch.logical_not,
    "IsNaN": torch.isnan, "Softplus": torch.nn.functional.softplus, "Softsign": torch.nn.functional.softsign,
    "Atan": torch.atan, "Asin": torch.asin, "Acos": torch.acos, "Sinh": torch.sinh, "Cosh": torch.cosh,
}
_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Less": torch.lt,
    "LessOrEqual": torch.le, "Greater": torch.gt, "GreaterOrEqual": torch.ge, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor,
}


@op(*_UNARY)
def _unary(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _UNARY[call.op_type](args[0])


@op(*_BINARY)
def _binary(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _BINARY[call.op_type](args[0], args[1])


@op("Identity", "Dropout", params=(1, 2))
def _identity(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> Any:
    # Dropout at inference is the identity; its optional mask output is all true
    x = args[0]
    return (x, torch.ones_like(x, dtype=torch.bool)) if call.num_outputs > 1 else x


@op("Div")
def _div(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a, b = args
    # integer Div truncates toward zero in ONNX (C semantics), unlike Python's floor division
    return torch.div(a, b, rounding_mode="trunc") if _is_int(a) and _is_int(b) else a / b


@op("Mod")
def _mod(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    fmod = attrs.get("fmod", 0) or args[0].is_floating_point()
    return torch.fmod(args[0], args[1]) if fmod else torch.remainder(args[0], args[1])


@op("Pow")
def _pow(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.pow(args[0], args[1]).to(args[0].dtype)  # the result has the base's type


@op("Max", "Min", "Sum", "Mean")
def _variadic(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    f = {"Max": torch.maximum, "Min": torch.minimum}.get(call.op_type, torch.add)
    out = args[0]
    for t in args[1:]:
        out = f(out, t)
    return out / len(args) if call.op_type == "Mean" else out


@op("Where")
def _where(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.where(args[0].to(torch.bool), args[1], args[2])


@op("IsInf")
def _isinf(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, neg, pos = args[0], attrs.get("detect_negative", 1), attrs.get("detect_positive", 1)
    if neg and pos:
        return torch.isinf(x)
    return torch.isneginf(x) if neg else torch.isposinf(x) if pos else torch.zeros_like(x, dtype=torch.bool)


@op("Cast")
def _cast(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return args[0].to(torch_dtype(attrs["to"], call))  # float -> int truncates toward zero, as in ONNX


@op("CastLike")
def _cast_like(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return args[0].to(args[1].dtype)


# -- shape -------------------------------------------------------------------------------------


@op("Shape")
def _shape(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    # always a host tensor: shapes are known without touching the device
    dims = list(args[0].shape)[attrs.get("start", 0) : attrs.get("end")]
    return torch.tensor(dims, dtype=torch.int64)


@op("Size")
def _size(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(args[0].numel(), dtype=torch.int64)


@op("Reshape", params=(1,))
def _reshape(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, shape = args[0], ints(args[1])
    if not attrs.get("allowzero", 0):  # 0 copies the input's dim (unless allowzero)
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def _flatten(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Transpose")
def _transpose(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    return x.permute(attrs.get("perm") or list(range(x.dim()))[::-1])


@op("Squeeze", params=(1,))
def _squeeze(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, axes = args[0], axes_of(args, attrs)
    if not axes:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


@op("Unsqueeze", params=(1,))
def _unsqueeze(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, axes = args[0], axes_of(args, attrs) or []
    rank = x.dim() + len(axes)  # axes index the output
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Concat")
def _concat(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.cat([t for t in args if t is not None], dim=attrs["axis"])


@op("Split", params=(1,))
def _split(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    x, axis = args[0], attrs.get("axis", 0)
    sizes = ints(args[1]) if len(args) > 1 and args[1] is not None else attrs.get("split")
    if sizes:
        return torch.split(x, list(sizes), dim=axis)
    n = attrs.get("num_outputs", call.num_outputs)
    return torch.split(x, math.ceil(x.shape[axis] / n), dim=axis)  # the last chunk may be smaller


@op("Slice", params=(1, 2, 3, 4))
def _slice(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    if call.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = ints(args[1]), ints(args[2])
        axes = ints(args[3]) if len(args) > 3 and args[3] is not None else None
        steps = ints(args[4]) if len(args) > 4 and args[4] is not None else None
    axes = axes if axes is not None else list(range(len(starts)))
    for s, e, a, st in zip(starts, ends, axes, steps or [1] * len(starts)):
        x = _slice_axis(x, a % x.dim(), s, e, st)
    return x


def _slice_axis(x: torch.Tensor, axis: int, start: int, end: int, step: int) -> torch.Tensor:
    d = x.shape[axis]
    start, end = start + d if start < 0 else start, end + d if end < 0 else end
    if step > 0:  # ONNX clamps to [0, d] for positive steps ...
        index = [slice(None)] * axis + [slice(min(max(start, 0), d), min(max(end, 0), d), step)]
        return x[tuple(index)]
    start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)  # ... and [-1, d-1] for negative ones
    return x.index_select(axis, torch.arange(start, end, step, device=x.device))


@op("Gather")
def _gather(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, idx = args
    axis = attrs.get("axis", 0) % x.dim()
    idx = idx.to(torch.int64)
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)  # negative indices count from the end
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, idx = args
    axis = attrs.get("axis", 0) % x.dim()
    idx = idx.to(torch.int64)
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


@op("GatherND")
def _gather_nd(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    if attrs.get("batch_dims", 0):
        raise unsupported(call.op_type, call.name, "batch_dims")
    x, idx = args[0], args[1].to(torch.int64)
    return x[tuple(idx[..., j] for j in range(idx.shape[-1]))]


@op("Expand", params=(1,))
def _expand(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(args[1]))))  # bidirectional


@op("Tile", params=(1,))
def _tile(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return args[0].repeat(ints(args[1]))


@op("ConstantOfShape", params=(0,))
def _constant_of_shape(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    value = np.asarray(attrs.get("value", np.zeros(1, np.float32)))
    dtype = torch.from_numpy(value.reshape(-1)[:1].copy()).dtype
    return torch.full(ints(args[0]), value.reshape(-1)[0].item(), dtype=dtype, device=args[0].device)


@op("Range", params=(0, 1, 2))
def _range(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    start, limit, delta = (a.reshape(()).item() for a in args)
    n = max(math.ceil((limit - start) / delta), 0)  # ONNX: start + i * delta for i < n
    steps = torch.arange(n, dtype=args[0].dtype, device=args[0].device)
    return steps * delta + start


@op("Pad", params=(1, 2, 3))
def _pad(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, mode = args[0], attrs.get("mode", "constant")
    pads = ints(args[1]) if len(args) > 1 and args[1] is not None else list(attrs.get("pads", []))
    value = args[2].item() if len(args) > 2 and args[2] is not None else attrs.get("value", 0.0)
    axes = axes_of(args, {}, 3) or list(range(x.dim()))
    full = [0] * (2 * x.dim())
    for k, a in enumerate(axes):
        full[a % x.dim()], full[x.dim() + a % x.dim()] = pads[k], pads[len(axes) + k]
    spec: list[int] = []
    for a in reversed(range(x.dim())):  # F.pad lists (begin, end) from the last dim backwards
        spec += [full[a], full[x.dim() + a]]
    if mode == "constant":
        return torch.nn.functional.pad(x, spec, value=value)
    if any(spec[2 * (x.dim() - 2) :]) or not 3 <= x.dim() <= 5:  # torch pads only spatial dims here
        raise unsupported(call.op_type, call.name, f"mode={mode} on non-spatial axes")
    return torch.nn.functional.pad(x, spec[: 2 * (x.dim() - 2)], mode={"edge": "replicate"}.get(mode, mode))


@op("Trilu", params=(1,))
def _trilu(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    k = args[1].item() if len(args) > 1 and args[1] is not None else 0
    return torch.triu(args[0], k) if attrs.get("upper", 1) else torch.tril(args[0], k)


@op("NonZero")
def _nonzero(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.nonzero(args[0]).T.contiguous()


@op("Einsum")
def _einsum(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.einsum(attrs["equation"], *args)


@op("CumSum", params=(1,))
def _cumsum(call: NodeCall, args: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, axis = args[0], int(args[1].item())
    if attrs.get("reverse", 0):
        x = x.flip(axis)
    out = x.cumsum(axis).to(x.dtype)
    if attrs.get("exclusive", 0):
        out = out - x
    return out.flip(axis) if attrs.get("reverse", 0) else out
