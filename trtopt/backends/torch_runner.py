"""PyTorch eager runner: FP32/FP16/BF16 on CPU or CUDA, optional 2:4 semi-structured Linear on CUDA.

Gives a real GPU comparison where TensorRT is missing. ``model`` is one of:

* a ``torch.nn.Module`` (copied, so the caller's module is not cast or sparsified);
* a ``.pt``/``.pth`` file holding a TorchScript module or a whole pickled ``nn.Module``
  (``torch.load(weights_only=False)``: only load files you trust);
* any other name, given to the caller's ``loader`` (``trtopt bench`` resolves built-in workload
  names such as ``digits_cnn`` this way); the runner itself knows no workloads.

ONNX files are not accepted (there is no ONNX->PyTorch converter here). Inputs and outputs
are float32 numpy at the ``infer`` boundary; the cast to FP16/BF16 happens on the device.
``prepare`` keeps inputs device-resident ("gpu-no-transfer" timing) and
``prepare_cuda_graph`` captures one forward pass in a CUDA graph.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trtopt.backends.base import Runner, TensorSpec
from trtopt.errors import BackendUnavailableError, ConfigError, InputError
from trtopt.log import get_logger
from trtopt.optional import require

log = get_logger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


class TorchModel(NamedTuple):
    """A module as a ``loader`` returns it.

    Attributes:
        module: The ``nn.Module``.
        input_name: Name of its single input (None: keep the runner's ``input_names``).
        input_shape: Shape of that input with ``None`` for the batch (None: unknown).
    """

    module: Any
    input_name: str | None = None
    input_shape: tuple[int | None, ...] | None = None


#: Resolves a model name that is neither an ``nn.Module`` nor a ``.pt`` file (e.g. a built-in workload).
ModelLoader = Callable[[str], TorchModel]


def _load_module(model: Any, loader: ModelLoader | None) -> TorchModel:
    """The :class:`TorchModel` for the accepted ``model`` forms."""
    torch = require("torch")
    if isinstance(model, torch.nn.Module):
        return TorchModel(copy.deepcopy(model))
    text = os.fspath(model)
    if text.endswith(".onnx"):
        raise InputError(f"the torch backend runs PyTorch modules, not ONNX files ({text}); pass a workload name "
                         "(e.g. digits_cnn), a .pt file or an nn.Module")
    if text.endswith((".pt", ".pth")):
        path = Path(text)
        if not path.is_file():
            raise InputError(f"model file {path} is a directory" if path.is_dir() else f"model file not found: {path}")
        try:
            return TorchModel(torch.jit.load(str(path), map_location="cpu"))
        except RuntimeError:
            pass
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:  # pickle/zip errors of many types
            raise InputError(f"cannot load {path} as a PyTorch module: {exc}") from None
        if not isinstance(obj, torch.nn.Module):
            raise InputError(f"{path} holds a {type(obj).__name__}, not an nn.Module (a state_dict needs its class)")
        return TorchModel(obj)
    if loader is None:
        raise InputError(f"unknown torch model '{text}': not an nn.Module nor a .pt file (workload names such as "
                         "digits_cnn are resolved by `trtopt bench`)")
    return loader(text)


class TorchRunner(Runner):
    """Run a PyTorch module eagerly.

    Args:
        model: ``nn.Module``, ``.pt`` path, or a name for ``loader`` (see module docstring).
        precision: ``fp32``, ``fp16`` or ``bf16`` (weights and activations).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default CUDA when available.
        sparse24: Replace 2:4-compliant ``nn.Linear`` weights by semi-structured sparse tensors
            (CUDA, FP16/BF16, compute capability >= 8.0); non-compliant layers stay dense.
        input_names: Input names in ``forward`` argument order.
        output_names: Output names (default ``logits`` for one output, else ``output_<i>``).
        input_shape: Shape of the (single) input with ``None`` for the batch, for input checks;
            taken from the loader's :class:`TorchModel` when not given.
        threads: ``torch.set_num_threads`` on CPU (0 keeps torch's default).
        loader: Resolves a ``model`` name that is neither a module nor a ``.pt`` file.
    """

    backend = "torch"

    def __init__(self, model: Any, precision: str = "fp32", device: str | None = None, sparse24: bool = False,
                 input_names: Sequence[str] = ("input",), output_names: Sequence[str] | None = None,
                 input_shape: Sequence[int | None] | None = None, threads: int = 0,
                 loader: ModelLoader | None = None) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"torch precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        self.model_arg, self.precision, self.device, self.sparse24 = model, precision, device, sparse24
        self.input_names, self.output_names = tuple(input_names), tuple(output_names) if output_names else None
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.threads, self.loader = threads, loader
        self.module: Any = None
        self.sparse_layers: list[str] = []

    # -- lifecycle -----------------------------------------------------------------
    def _activate(self) -> None:
        torch = require("torch")
        module, name, shape = _load_module(self.model_arg, self.loader)
        if name and self.input_names == ("input",):
            self.input_names = (name,)
        self.input_shape = self.input_shape or shape
        dev = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("device 'cuda' asked for but PyTorch sees no CUDA GPU")
        self.device = dev
        if self.threads and dev == "cpu":
            torch.set_num_threads(self.threads)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        self.module = module.eval().to(device=dev, dtype=self.dtype)
        if self.sparse24:
            self._sparsify(torch)

    def _deactivate(self) -> None:
        self.module = None

    def _sparsify(self, torch: Any) -> None:
        from trtopt.sparsity import check_2to4

        if not self.device.startswith("cuda"):
            raise BackendUnavailableError("2:4 semi-structured sparsity in PyTorch needs a CUDA GPU (sm_80+)")
        if self.precision == "fp32":
            raise ConfigError("2:4 semi-structured Linear needs precision fp16 or bf16")
        from torch.sparse import to_sparse_semi_structured

        for name, mod in self.module.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            w = mod.weight.detach()
            if not check_2to4(w.float().cpu().numpy(), axis=1):
                continue
            try:
                mod.weight = torch.nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
                self.sparse_layers.append(name)
            except (RuntimeError, ValueError) as exc:  # shape/dtype constraints of the sparse kernels
                log.info("Linear %s stays dense: %s", name, str(exc).splitlines()[0])
        if not self.sparse_layers:
            log.warning("no nn.Linear layer could use 2:4 semi-structured sparsity (none compliant or supported)")

    # -- metadata ------------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        """Input specs (shape known for workloads or when ``input_shape`` was given)."""
        shape = self.input_shape if self.input_shape is not None and len(self.input_names) == 1 else ()
        return [TensorSpec(n, tuple(shape), np.dtype(np.float32)) for n in self.input_names]

    def output_specs(self) -> list[TensorSpec]:
        """Output names (shapes are not known ahead of a forward pass)."""
        return [TensorSpec(n, (), np.dtype(np.float32)) for n in (self.output_names or ("logits",))]

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Check names always, shapes when the input shape is known."""
        if self.input_shape is not None and len(self.input_names) == 1:
            return super().check_inputs(feeds)
        if set(feeds) != set(self.input_names):
            raise InputError(f"inputs {sorted(feeds)} do not match the model inputs {list(self.input_names)}")
        return None

    def describe(self) -> dict[str, object]:
        """Device, precision, threads and sparse layers."""
        torch = require("torch")
        info: dict[str, object] = {"backend": self.backend, "device": str(self.device), "precision": self.precision,
                                   "threads": torch.get_num_threads(), "sparse24_layers": list(self.sparse_layers)}
        if self.device and str(self.device).startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(torch.device(self.device))
        return info

    # -- inference -----------------------------------------------------------------
    def _to_device(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        torch = require("torch")
        out = []
        for n in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
            out.append(t.to(self.dtype) if t.is_floating_point() else t)
        return out

    def _forward(self, args: list[Any]) -> Any:
        torch = require("torch")
        with torch.inference_mode():
            return self.module(*args)

    def _named(self, out: Any) -> dict[str, Any]:
        if isinstance(out, Mapping):
            return dict(out)
        outs = list(out) if isinstance(out, tuple | list) else [out]
        names = self.output_names or (("logits",) if len(outs) == 1 else tuple(f"output_{i}" for i in range(len(outs))))
        if len(names) != len(outs):
            raise InputError(f"the model returned {len(outs)} outputs but {len(names)} output names were given")
        return dict(zip(names, outs))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._forward(self._to_device(feeds))
        except RuntimeError as exc:
            raise InputError(f"PyTorch failed to run the model: {str(exc).splitlines()[0]}") from exc
        return {k: v.detach().float().cpu().numpy() for k, v in self._named(out).items()}

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """Move inputs to the device once; the callable runs one forward pass (no host copies, no sync)."""
        if not self._active:
            raise RuntimeError("TorchRunner must be activated (use it as a context manager)")
        self.check_inputs(feeds)
        args = self._to_device(feeds)
        return lambda: self._forward(args)

    def prepare_cuda_graph(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """Capture one forward pass on static device inputs in a CUDA graph; returns ``graph.replay``.

        Warm-up runs on a side stream before capture, as PyTorch and trtexec both do.
        """
        torch = require("torch")
        if not str(self.device).startswith("cuda"):
            raise ConfigError("CUDA-graph timing needs device='cuda'")
        self.check_inputs(feeds)
        static = self._to_device(feeds)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._forward(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_out = self._forward(static)
        self._graph_in = static  # keep static buffers alive with the graph
        return graph.replay
