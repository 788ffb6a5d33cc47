"""``bench_models`` called from Python: output names are checked before any work."""

from __future__ import annotations

import pytest

from trtopt.benchmark import BenchConfig
from trtopt.errors import ConfigError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_unknown_tolerance_name_library_call(files):
    from trtopt.benchmark.suite import bench_models

    cfg = BenchConfig(batch_sizes=(1,), min_duration_s=0.02, rounds=5, warmup=1, regression_outputs=("boxes",))
    with pytest.raises(ConfigError, match="boxes"):
        bench_models([str(files["cnn"])], ["onnxruntime"], cfg, num_samples=4)
