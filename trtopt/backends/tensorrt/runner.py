"""TensorRT runner: engine I/O as PyTorch CUDA tensors, ``execute_async_v3`` on a torch stream.

No pycuda: torch allocates buffers and owns the stream. ``prepare`` binds inputs on the
device once and optionally captures the enqueue in a CUDA graph after one warm-up enqueue, as trtexec
does, so the benchmark times only the engine.

Why trtopt keeps its own runner instead of Polygraphy's ``TrtRunner``: ``TrtRunner.infer`` does
per-call work around every enqueue (walks the engine I/O, copies inputs host -> device, queries
tensor formats, sets output allocators, copies outputs back and synchronizes; polygraphy 0.53.6
``backend/trt/runner.py``), which a latency benchmark would time along with the engine. ``prepare``
binds once and leaves only ``execute_async_v3`` (or a CUDA-graph replay) in the timed loop.
Polygraphy's runner is the reference instead: tests/gpu/test_polygraphy_parity.py compares both
on the same engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.backends.base import Runner, TensorSpec
from trtopt.errors import BackendUnavailableError, InputError, MissingDependencyError

#: ``trt.DataType`` member name -> numpy dtype name (BF16/FP8/INT4 have no numpy type).
DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
          "BOOL": "bool", "UINT8": "uint8"}


def numpy_dtype(trt_dtype_name: str, tensor: str) -> np.dtype:
    """Return the numpy dtype for a TensorRT ``DataType`` name.

    Raises:
        InputError: A type numpy cannot hold (BF16, FP8, INT4...).
    """
    if trt_dtype_name not in DTYPES:
        raise InputError(f"engine tensor '{tensor}' has type {trt_dtype_name}, which trtopt cannot feed from numpy")
    return np.dtype(DTYPES[trt_dtype_name])


class TensorRTRunner(Runner):
    """Run a serialized TensorRT engine.

    Args:
        engine_path: Engine file (a manifest beside it is checked against this TensorRT and GPU).
        cuda_graph: Capture the enqueue in a CUDA graph in :meth:`prepare` (static shapes per call).
        check_manifest: Refuse engines whose manifest names another TensorRT version or GPU.
        builder: Called on activation to build (or reuse) the engine; returns its path.
    """

    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], cuda_graph: bool = False,
                 check_manifest: bool = True, builder: Callable[[], Path] | None = None) -> None:
        super().__init__()
        self.builder = builder
        self.path = Path(engine_path)
        self.cuda_graph = cuda_graph
        self.check_manifest = check_manifest
        self._state: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def _activate(self) -> None:
        import torch

        from trtopt.backends.tensorrt.flavour import flavour_of, import_tensorrt, label, make_logger
        from trtopt.backends.tensorrt.logparse import deserialize_failure
        from trtopt.backends.tensorrt.manifest import (
            flavour_mismatch,
            load_manifest,
            manifest_flavour,
            require_compatible,
        )
        from trtopt.backends.tensorrt.store import check_engine_file, manifest_path_for

        if self.builder is not None:
            self.path = Path(self.builder())
        data = check_engine_file(self.path)
        mpath = manifest_path_for(self.path)
        manifest = load_manifest(mpath) if mpath.is_file() else None
        # The manifest decides which TensorRT loads the engine; a mismatch is reported before deserializing.
        want = manifest_flavour(manifest) if manifest else "tensorrt"
        try:
            trt = import_tensorrt(want)
        except MissingDependencyError:
            trt = import_tensorrt("tensorrt")
        mismatch = flavour_mismatch(manifest, flavour_of(trt), trt.__version__, f"engine {self.path}") if manifest \
            else None
        if mismatch is not None and self.check_manifest:
            raise mismatch
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"running a {label(flavour_of(trt))} engine needs an NVIDIA GPU with CUDA "
                                          "and none is visible (building works without one: `trtopt build`)")
        if manifest is not None and self.check_manifest:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            gpu = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}"}
            require_compatible(manifest, trt.__version__, gpu, f"engine {self.path}")
        logger = make_logger(trt)
        runtime = trt.Runtime(logger)
        if manifest and "VERSION_COMPATIBLE" in manifest.get("build", {}).get("plan", {}).get("builder_flags", []):
            runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise deserialize_failure(str(self.path), logger.lines)
        context = engine.create_execution_context()
        specs: dict[str, list[TensorSpec]] = {"input": [], "output": []}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            kind = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            specs[kind].append(TensorSpec(name, shape, numpy_dtype(engine.get_tensor_dtype(name).name, name)))
        self._state = {"logger": logger, "runtime": runtime, "engine": engine, "context": context, "specs": specs,
                       "stream": torch.cuda.Stream(), "outputs": {}, "graph": None, "manifest": manifest}

    def _deactivate(self) -> None:
        import torch

        if self._state.get("stream") is not None:
            self._state["stream"].synchronize()
        # Drop in dependency order: graph and buffers, context, engine, runtime.
        for key in ("graph", "outputs", "bound", "context", "engine", "runtime", "logger", "stream"):
            self._state.pop(key, None)
        self._state = {}
        torch.cuda.empty_cache()

    # -- metadata ------------------------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        """Engine inputs (``None`` for dynamic axes)."""
        return list(self._state["specs"]["input"])

    def output_specs(self) -> list[TensorSpec]:
        """Engine outputs."""
        return list(self._state["specs"]["output"])

    def describe(self) -> dict[str, object]:
        """Backend, engine path, CUDA-graph use and the manifest's TensorRT version."""
        m = self._state.get("manifest") or {}
        return {"backend": self.backend, "engine": str(self.path), "cuda_graph": self.cuda_graph,
                "device": "cuda", "tensorrt": m.get("tensorrt", {}).get("version")}

    # -- execution -----------------------------------------------------------------------------
    def _bind(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Set shapes and addresses for device ``inputs``; (re)allocate outputs; return the outputs."""
        import torch

        context = self._state["context"]
        for name, t in inputs.items():
            if not context.set_input_shape(name, tuple(t.shape)):
                raise InputError(f"input '{name}' shape {tuple(t.shape)} is outside the engine's optimization "
                                 "profile (rebuild with --shapes covering it)")
            context.set_tensor_address(name, int(t.data_ptr()))
        outputs = {}
        for spec in self._state["specs"]["output"]:
            shape = tuple(context.get_tensor_shape(spec.name))
            buf = self._state["outputs"].get(spec.name)
            if buf is None or tuple(buf.shape) != shape:
                buf = torch.empty(shape, dtype=getattr(torch, str(spec.dtype)), device="cuda")
                self._state["outputs"][spec.name] = buf
            context.set_tensor_address(spec.name, int(buf.data_ptr()))
            outputs[spec.name] = buf
        return outputs

    def _enqueue(self) -> None:
        import torch

        stream = self._state["stream"]
        caller = torch.cuda.current_stream()
        stream.wait_stream(caller)
        if not self._state["context"].execute_async_v3(stream.cuda_stream):
            raise InputError(f"TensorRT enqueue failed: {' | '.join(self._state['logger'].lines[-2:])}")
        caller.wait_stream(stream)

    def _to_device(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in feeds.items()}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        inputs = self._to_device(feeds)
        outputs = self._bind(inputs)
        self._enqueue()
        torch.cuda.current_stream().synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """Keep ``feeds`` on the device and return an enqueue-only callable (no host copies, no sync).

        With ``cuda_graph=True`` one warm-up enqueue runs, then the enqueue is captured on the
        runner's stream and the callable replays the graph.
        """
        import torch

        if not self.active:
            raise RuntimeError("TensorRTRunner must be activated (use it as a context manager)")
        self.check_inputs(feeds)
        inputs = self._to_device(feeds)
        outputs = self._bind(inputs)
        self._state["bound"] = (inputs, outputs)
        if not self.cuda_graph:
            return self._enqueue
        self._enqueue()  # warm-up: keeps initialization calls out of the capture
        torch.cuda.synchronize()
        stream, graph = self._state["stream"], torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            self._state["context"].execute_async_v3(stream.cuda_stream)
        self._state["graph"] = graph
        return graph.replay
