"""Backends: a :class:`~trtopt.backends.base.Runner` per runtime, opened by name."""

from __future__ import annotations

import os
from typing import Any

from trtopt.backends.base import Runner, TensorSpec
from trtopt.errors import ConfigError

BACKENDS = ("onnxruntime", "tensorrt", "tensorrt-rtx", "torch")


def open_runner(backend: str, model: str | os.PathLike[str], **kwargs: Any) -> Runner:
    """Create (not yet activate) a runner for ``model`` on ``backend``.

    Args:
        backend: One of :data:`BACKENDS`.
        model: Model artifact: an ``.onnx`` file (onnxruntime, torch, tensorrt[-rtx]) or an
            engine file (tensorrt[-rtx]; the manifest says which TensorRT loads it).
        **kwargs: Backend-specific options.

    Returns:
        A runner; use it as a context manager.

    Raises:
        ConfigError: Unknown backend.
        MissingDependencyError: The backend's package is not installed.
    """
    if backend == "onnxruntime":
        from trtopt.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, **kwargs)
    if backend in ("tensorrt", "tensorrt-rtx"):
        from trtopt.backends.tensorrt import open_tensorrt_runner

        if backend == "tensorrt-rtx" and "config" not in kwargs:
            kwargs.setdefault("backend", "tensorrt-rtx")  # a BuildConfig field for ONNX models
        return open_tensorrt_runner(model, **kwargs)
    if backend == "torch":
        from trtopt.backends.torch_runner import TorchRunner

        return TorchRunner(model, **kwargs)
    raise ConfigError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "Runner", "TensorSpec", "open_runner"]
