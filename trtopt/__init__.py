"""trtopt: 2:4 sparsity, entropy calibration, Q/DQ INT8 / FP16 and TensorRT 10/11 engines.

Importing this package is cheap: it imports neither TensorRT nor torch and touches no
CUDA device. Stage APIs live in their subpackages (``trtopt.sparsity``, ``trtopt.calib``,
``trtopt.quant``, ``trtopt.backends``, ``trtopt.benchmark``, ``trtopt.pipeline``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
