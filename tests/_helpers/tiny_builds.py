"""The tiny conv net's build inputs shared by the build-only and the GPU TensorRT backend tests.

:func:`~_helpers.onnx_models.tiny_conv_net` takes ``input[N, 1, 8, 8]``; these give its test batch and
the optimization profile both suites build it with (min 1, opt 4, max 16 samples).
"""

from __future__ import annotations

import numpy as np

#: The profile of ``input``: (min, opt, max) shapes.
TINY_PROFILE = ((1, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8))


def tiny_batch() -> np.ndarray:
    """Four seeded samples ``[4, 1, 8, 8]`` float32 in [0, 1) (the profile's opt batch)."""
    return np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)


def tiny_build_config(**kw):
    """``BuildConfig`` with :data:`TINY_PROFILE` for ``input`` and any further fields ``kw``."""
    from trtopt.backends.tensorrt import BuildConfig, Profile

    return BuildConfig(shapes=(Profile("input", *TINY_PROFILE),), **kw)
