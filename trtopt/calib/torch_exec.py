"""A small ONNX-graph interpreter on PyTorch: runs an FP32 model node by node on the CPU or a GPU.

The torch histogram collector needs every calibrated tensor of a batch while the model runs
on a CUDA device; ONNX Runtime's CUDA provider is not always installed, PyTorch usually is.
:class:`TorchGraphExecutor` turns initializers and ``Constant`` nodes into device tensors once,
then executes the nodes in graph order with the op functions of :mod:`trtopt.calib.torch_ops`
and :mod:`trtopt.calib.torch_ops_nn`, handing out each requested tensor as soon as it exists
and freeing every intermediate after its last consumer, so memory stays that of one inference.

Placement on a GPU: ``Shape`` outputs, small integer constants and whatever is computed only
from them stay on the host, so the shape arithmetic of exported transformers (Shape -> Gather ->
Concat -> Reshape) costs no device synchronisation; a host tensor feeding a device op as data is
copied over (non-blocking), while shape/axes/bounds inputs are read on the host directly.

Imports torch at module level: only the torch histogram collector imports this module.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from trtopt.calib import torch_ops_nn  # noqa: F401  (registers the conv/pool/norm ops)
from trtopt.calib.torch_ops import OPS, PARAM_INPUTS, NodeCall, OpFn, unsupported
from trtopt.errors import InputError
from trtopt.onnx.graph import opset_of

_HOST_CONST_MAX = 64  # constants up to this many elements also get a host copy (shape arithmetic)
_HOST_RESULT_MAX = 4096  # a host-computed result larger than this moves to the device
_GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_LEAVES = (("cuda", "matmul", "cudnn"), ("cudnn", "conv", "cudnn"), ("cudnn", "rnn", "cudnn"),
           ("mkldnn", "matmul", "mkldnn"), ("mkldnn", "conv", "mkldnn"))


def _legacy(get: Any) -> Any:
    try:
        return get()
    except RuntimeError:  # the caller mixed the legacy and new TF32 APIs: leave that switch alone
        return None


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Disable TF32 / reduced-precision FP32 math for matmul and convolution, restoring it afterwards.

    Statistics must match FP32 ONNX Runtime, and PyTorch lets cuDNN convolutions use TF32 by
    default. The legacy switches (``float32_matmul_precision``, ``cudnn.allow_tf32``) are set
    through their own setters so they stay readable during the run; the per-op ``fp32_precision``
    leaves of PyTorch >= 2.9 are forced to ``ieee`` only where their parents would not resolve to
    IEEE. Everything is written back exactly afterwards.
    """
    b = torch.backends
    leaves = [(getattr(getattr(b, be, None), op, None), getattr(b, parent, None)) for be, op, parent in _LEAVES]
    leaves = [(leaf, parent) for leaf, parent in leaves if hasattr(leaf, "fp32_precision")]
    matmul = _legacy(torch.get_float32_matmul_precision)
    cudnn = _legacy(lambda: b.cudnn.allow_tf32)
    saved = [leaf.fp32_precision for leaf, _ in leaves]
    try:
        if matmul is not None:
            torch.set_float32_matmul_precision("highest")  # also sets cuda/mkldnn matmul to "ieee"
        if cudnn is not None:
            b.cudnn.allow_tf32 = False  # conv/rnn leaves -> "none" (inherit)
        generic = getattr(b, "fp32_precision", "none")
        for leaf, parent in leaves:
            inherited = getattr(parent, "fp32_precision", "none")
            inherits_ieee = inherited == "ieee" or (inherited == "none" and generic in ("none", "ieee"))
            if not (leaf.fp32_precision == "ieee" or (leaf.fp32_precision == "none" and inherits_ieee)):
                leaf.fp32_precision = "ieee"
        if _legacy(lambda: b.cuda.matmul.allow_tf32) is None:  # a mixed caller state cuBLAS refuses
            b.cuda.matmul.allow_tf32 = False
        yield
    finally:
        if matmul is not None:
            torch.set_float32_matmul_precision(matmul)
        if cudnn is not None:
            b.cudnn.allow_tf32 = cudnn
        for (leaf, _), value in zip(leaves, saved):
            leaf.fp32_precision = value


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
        raise InputError(f"the torch collector cannot hold a tensor of dtype {arr.dtype}; "
                         "use collector='onnxruntime'")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, order="C")
    return torch.from_numpy(arr)


def _attrs(node: onnx.NodeProto, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in _GRAPH_ATTRS:  # If / Loop / Scan bodies
            raise unsupported(node.op_type, name)
        v = onnx.helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        elif a.type == onnx.AttributeProto.STRINGS:
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


def _constant_value(node: onnx.NodeProto, name: str) -> np.ndarray:
    attrs = _attrs(node, name)
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise unsupported(node.op_type, name, f"attribute {next(iter(attrs), 'none')}")


@dataclass(frozen=True)
class _Step:
    fn: OpFn
    call: NodeCall
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    params: frozenset[int]


def node_supported(node: onnx.NodeProto) -> bool:
    """Whether the torch collector has a kernel for ``node`` (default ONNX domain, registered op)."""
    return node.domain in ("", "ai.onnx") and (node.op_type in OPS or node.op_type == "Constant")


class TorchGraphExecutor:
    """Execute an ONNX graph with PyTorch ops on one device.

    Args:
        model: The FP32 ONNX model (default domain ops, no control flow).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        InputError: An op (or op variant) without a torch implementation, naming the node.
    """

    def __init__(self, model: onnx.ModelProto, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self._split = self.device.type != "cpu"  # host/device placement only matters off the CPU
        g = model.graph
        opset = opset_of(model)
        self.consts: dict[str, torch.Tensor] = {}
        self.host_consts: dict[str, torch.Tensor] = {}
        for init in g.initializer:
            self._add_const(init.name, numpy_helper.to_array(init))
        self.steps: list[_Step] = []
        for node in g.node:
            name = node.name or (node.output[0] if node.output else node.op_type)
            if not node_supported(node):
                raise unsupported(node.op_type, name)
            if node.op_type == "Constant":
                self._add_const(node.output[0], _constant_value(node, name))
                continue
            call = NodeCall(name, node.op_type, opset, len(node.output))
            self.steps.append(_Step(OPS[node.op_type], call, tuple(node.input), tuple(node.output),
                                    _attrs(node, name), PARAM_INPUTS[node.op_type]))
        self.inputs = [vi.name for vi in g.input if vi.name not in self.consts]
        self._uses = Counter(i for s in self.steps for i in s.inputs if i and i not in self.consts)

    def _add_const(self, name: str, arr: np.ndarray) -> None:
        host = _to_tensor(arr)
        self.consts[name] = host.to(self.device)
        if self._split and host.numel() <= _HOST_CONST_MAX:
            self.host_consts[name] = host

    def run(self, feeds: Mapping[str, np.ndarray], want: set[str] | frozenset[str]) -> Iterator[tuple[str, Any]]:
        """Run one batch, yielding ``(name, tensor)`` for every tensor in ``want`` when it is produced.

        Graph inputs in ``want`` come first. A yielded tensor must not be modified in place (later
        nodes may still read it); intermediates are released after their last consumer.

        Args:
            feeds: Input name -> array.
            want: Names of the tensors to hand out.

        Yields:
            ``(tensor name, torch.Tensor on the executor's device or the host)``.
        """
        uses = dict(self._uses)
        env: dict[str, torch.Tensor] = {}
        with strict_fp32(), torch.no_grad():
            for name in self.inputs:
                if name not in feeds:
                    raise InputError(f"torch collector: no data for model input '{name}'")
                t = _to_tensor(feeds[name]).to(self.device)
                if name in want:
                    yield name, t
                if uses.get(name):
                    env[name] = t
            for step in self.steps:
                outs = self._call(step, env)
                for name, val in zip(step.outputs, outs):
                    if not name or val is None:
                        continue
                    if self._split and val.device.type == "cpu" and val.numel() > _HOST_RESULT_MAX:
                        val = val.to(self.device, non_blocking=True)
                    if name in want:
                        yield name, val
                    if uses.get(name):
                        env[name] = val
                for name in step.inputs:
                    if name in uses:
                        uses[name] -= 1
                        if uses[name] == 0:
                            env.pop(name, None)

    def _call(self, step: _Step, env: dict[str, torch.Tensor]) -> tuple[Any, ...]:
        try:
            outs = step.fn(step.call, self._gather(step, env), step.attrs)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"torch collector: node {step.call.name} ({step.call.op_type}) failed: {first}; "
                             "use collector='onnxruntime' if the model runs there") from exc
        return (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)

    def _gather(self, step: _Step, env: dict[str, torch.Tensor]) -> list[Any]:
        args: list[Any] = []
        for name in step.inputs:
            if not name:
                args.append(None)
            elif name in env:
                args.append(env[name])
            elif name in self.consts:
                args.append(self.host_consts.get(name, self.consts[name]))
            else:
                raise InputError(f"torch collector: tensor '{name}' read by node {step.call.name} "
                                 "is not produced before it (the graph is not topologically sorted)")
        if self._split and any(t is not None and t.device.type != "cpu" for t in args):
            for k, (name, t) in enumerate(zip(step.inputs, args)):
                if t is not None and t.device.type == "cpu" and k not in step.params:
                    args[k] = self.consts[name] if name in self.consts else t.to(self.device, non_blocking=True)
        return args
