"""Outlier samples: an input value far beyond the calibrated input range, or non-finite."""

from __future__ import annotations

import numpy as np

from trtopt.calib.outliers import outlier_samples
from trtopt.calib.table import CalibrationTable


def test_samples_beyond_16x_the_input_range_or_non_finite_are_named():
    x = np.random.default_rng(0).uniform(-1, 1, (10, 4, 4)).astype(np.float32)
    x[2, 1, 1] = 1e6
    x[6, 0, 0] = np.nan
    x[8, 3, 3] = 10.0  # 10 x the range: not an outlier
    table = CalibrationTable({"x": 1.0, "h": 3.0})
    assert outlier_samples(table, {"x": x, "mask": np.ones((10, 4))}) == [2, 6]
    assert outlier_samples(table, {"x": x}, static=("x",)) == []
