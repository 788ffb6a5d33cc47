"""Calibration: streaming |x| histograms, TensorRT-style entropy, JSON and TensorRT-cache tables.

Histograms are collected batch by batch, in ONNX Runtime on the CPU or, with ``collector="torch"``
(the default on a CUDA GPU), by executing the ONNX graph with PyTorch ops on the device
(:mod:`trtopt.calib.torch_exec`); ranges come from entropy (default), minmax, percentile or mse.
The table also keeps per-channel maxima of MatMul/Gemm activations for SmoothQuant.

Example::

    from trtopt.calib import CalibrationConfig, NumpySource, calibrate
    table = calibrate("model.onnx", NumpySource({"input": x}, batch_size=32), CalibrationConfig())
    table.save_json("calib.json"); table.write_trt_cache("calib.cache", trt_version=100300)
"""

from trtopt.calib.collect import calibrate, collect_histograms
from trtopt.calib.config import METHODS, CalibrationConfig
from trtopt.calib.histogram import AbsHistogram
from trtopt.calib.methods import amax_entropy, amax_mse, amax_percentile, compute_amax
from trtopt.calib.source import (
    CalibrationSource,
    ImageFolderSource,
    NumpySource,
    PreprocessSpec,
    TorchSource,
    validate_batch,
    workload_source,
)
from trtopt.calib.table import CalibrationTable, hex_to_scale, scale_to_hex
from trtopt.placement import calibration_targets

__all__ = [
    "METHODS", "AbsHistogram", "CalibrationConfig", "CalibrationSource", "CalibrationTable", "ImageFolderSource",
    "NumpySource", "PreprocessSpec", "TorchSource", "amax_entropy", "amax_mse", "amax_percentile", "calibrate",
    "calibration_targets", "collect_histograms", "compute_amax", "hex_to_scale", "scale_to_hex", "validate_batch",
    "workload_source",
]
