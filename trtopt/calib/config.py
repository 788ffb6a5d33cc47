"""Configuration of the calibration stage (the ``[calibrate]`` recipe table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trtopt.errors import ConfigError
from trtopt.onnx.ops import WEIGHTED_OPS

#: Progress callback of the collectors: ``(samples done, samples total or 0)``.
ProgressFn = Callable[[int, int], None]

#: Calibration methods understood by :func:`trtopt.calib.calibrate`.
METHODS = ("auto", "entropy", "minmax", "percentile", "mse")
#: Where activations are computed and histogrammed.
COLLECTORS = ("auto", "onnxruntime", "torch")
#: Which tensors get statistics: inputs of quantized ops (+ residual Adds), or every float tensor.
SCOPES = ("quantizable", "all")


@dataclass(frozen=True)
class CalibrationConfig:
    """How activation ranges (amax) are computed.

    Attributes:
        method: ``auto`` (default: per tensor, analytic ranges for bounded ops, else the lowest-error
            candidate among entropy / percentile / mse / max with guards against collapse and
            outliers, see :mod:`trtopt.calib.ranges`), ``entropy`` (TensorRT EntropyCalibrator2 /
            pytorch-quantization; collapses on SiLU/Swish outputs), ``minmax``, ``percentile`` or ``mse``.
        num_bins: Histogram bins (rounded up to a power of two; 2048 as in TensorRT). The bin width is
            a power of two derived from the global max|x|, so 1024-2048 bins cover ``[0, max|x|]``.
        percentile: Percentile of |x| used by ``method="percentile"``.
        start_bin: First candidate bin of the entropy / mse search (128 as in pytorch-quantization).
        num_bits: Quantized bit width (8: 128 target levels for signed INT8).
        skip_zeros: Drop exact zeros before histogramming (pytorch-quantization option, off by default).
        scope: ``quantizable`` (activation inputs of Conv/ConvTranspose/Gemm/MatMul and residual
            Add inputs) or ``all`` (every float tensor; a complete TensorRT implicit-INT8 cache).
        op_types: Op types whose activation inputs are calibrated when ``scope="quantizable"``.
        max_samples: Stop after this many samples (0 = use the whole source).
        intra_op_threads: ONNX Runtime threads (0 = its default).
        run_batch_size: Samples per ONNX Runtime call (source batches are cut to this; 0 = as given).
            Peak memory is about one call's activations, so this bounds it independently of the
            source's batch size (ResNet-50 at 224x224 holds ~100 MB of calibrated activations per sample).
        ort_optimize: Run ONNX Runtime with graph optimizations. Calibrated tensors are graph
            outputs of the augmented model, which optimizers keep under their names, so this only
            changes speed (and float rounding inside fused kernels); ``False`` runs the graph as exported.
        channel_stats: Also record per-input-channel max|x| of activations feeding MatMul/Gemm
            with constant weights (stored in the table's ``channel_amax``; SmoothQuant needs them).
        collector: ``onnxruntime`` (CPU), ``torch`` (the ONNX graph executed with PyTorch ops on
            ``device``, histograms built on that device) or ``auto``: torch on a CUDA GPU when
            torch sees one, else ONNX Runtime.
        device: Device of the torch collector: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        analytic: Give outputs of Softmax / Sigmoid / HardSigmoid / Tanh (also through reshapes and
            slices) their analytic range, amax 1.0, with every method but ``minmax``; ``False``
            histograms them like any tensor (strict TensorRT parity for ``entropy``).
    """

    method: str = "auto"
    num_bins: int = 2048
    percentile: float = 99.99
    start_bin: int = 128
    num_bits: int = 8
    skip_zeros: bool = False
    scope: str = "quantizable"
    op_types: tuple[str, ...] = WEIGHTED_OPS
    max_samples: int = 0
    intra_op_threads: int = 0
    run_batch_size: int = 8
    ort_optimize: bool = True
    channel_stats: bool = True
    collector: str = "auto"
    device: str = "auto"
    analytic: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.collector not in COLLECTORS:
            raise ConfigError(f"calibration collector must be one of {', '.join(COLLECTORS)}, got '{self.collector}'")
        if self.collector == "onnxruntime" and self.device not in ("auto", "cpu"):
            raise ConfigError(f"device '{self.device}' applies to the torch collector; ONNX Runtime collects on the "
                              "CPU (use collector='torch' for a GPU)")
        if self.scope not in SCOPES:
            raise ConfigError(f"calibration scope must be one of {', '.join(SCOPES)}, got '{self.scope}'")
        if self.num_bins < 16:
            raise ConfigError(f"num_bins must be >= 16, got {self.num_bins}")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (0, 100], got {self.percentile}")
        if not 2 <= self.num_bits <= 16:
            raise ConfigError(f"num_bits must be in [2, 16], got {self.num_bits}")
        if not 1 <= self.start_bin <= self.num_bins:
            raise ConfigError(f"start_bin must be in [1, num_bins], got {self.start_bin}")
        if self.max_samples < 0 or self.intra_op_threads < 0 or self.run_batch_size < 0:
            raise ConfigError("max_samples, intra_op_threads and run_batch_size must be >= 0")
        object.__setattr__(self, "op_types", tuple(self.op_types))
