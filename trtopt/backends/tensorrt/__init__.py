"""TensorRT 10.x / 11.x and TensorRT for RTX backend: build engines into a content-addressed store and run them.

Importing this package does not import ``tensorrt``, torch or CUDA; they are imported when a build
or a runner starts. Without TensorRT, :func:`open_tensorrt_runner` and
:func:`~trtopt.backends.tensorrt.builder.build_engine` raise
:class:`~trtopt.errors.MissingDependencyError` (``pip install 'trtopt[tensorrt]'``).

Example::

    from trtopt.backends.tensorrt import BuildConfig, Profile, build_engine, open_tensorrt_runner

    res = build_engine("model.onnx", BuildConfig(precision="fp16", shapes=(Profile.static("input", (1, 3, 224, 224)),)))
    with open_tensorrt_runner(res.engine) as r:
        out = r.infer({"input": x})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trtopt.backends.tensorrt.builder import BuildResult, build_engine
from trtopt.backends.tensorrt.config import BuildConfig, Profile
from trtopt.backends.tensorrt.flavour import import_tensorrt
from trtopt.backends.tensorrt.runner import TensorRTRunner
from trtopt.errors import ConfigError


def open_tensorrt_runner(model: str | os.PathLike[str], *, cuda_graph: bool = False, check_manifest: bool = True,
                         config: BuildConfig | None = None, engine_dir: str | os.PathLike[str] = "engines",
                         calibration: str | os.PathLike[str] | None = None, rebuild: bool = False,
                         **options: Any) -> TensorRTRunner:
    """Create (not activate) a TensorRT runner for an engine file or an ONNX model.

    An ``.onnx`` model is built (or reused from ``engine_dir``) when the runner is activated.

    Args:
        model: ``.engine``/``.plan`` file, or ``.onnx`` model.
        cuda_graph: Replay a captured CUDA graph in ``prepare`` (benchmark mode).
        check_manifest: Refuse engines whose manifest names another TensorRT version or GPU.
        config: Build options for an ONNX model (default ``BuildConfig(**options)``).
        engine_dir: Engine store for ONNX models.
        calibration: Calibration table/cache for implicit INT8 builds.
        rebuild: Rebuild even when the store has a matching engine.
        **options: :class:`BuildConfig` fields when ``config`` is not given.

    Raises:
        MissingDependencyError: TensorRT is not installed.
    """
    builder = None
    if Path(model).suffix.lower() == ".onnx":
        cfg = config or BuildConfig(**options)
        import_tensorrt(cfg.backend)

        def builder() -> Path:
            return build_engine(model, cfg, engine_dir=engine_dir, calibration=calibration, rebuild=rebuild).engine

    elif options or config is not None:
        raise ConfigError(f"build options apply to ONNX models only; {model} is an engine")
    else:
        import_tensorrt()
    return TensorRTRunner(model, cuda_graph=cuda_graph, check_manifest=check_manifest, builder=builder)


__all__ = ["BuildConfig", "BuildResult", "Profile", "TensorRTRunner", "build_engine", "open_tensorrt_runner"]
