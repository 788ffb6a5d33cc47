"""Outlier samples: the calibration samples whose inputs lie far beyond the calibrated input range.

The calibration clips a range dominated by a handful of values (:func:`trtopt.calib.ranges.outlier_flag`:
a few values above max/16); the samples holding those values are then quantized far outside their
range by construction, so judging INT8 on them measures the data, not the quantization. This module
names them, so the judge (:class:`trtopt.judge.verdict.Judge`) sets them apart and says so.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from trtopt.calib.table import CalibrationTable

#: A sample is an outlier when an input value exceeds this many times the input's calibrated amax
#: (the same max/16 that flags an outlier-dominated range), or is NaN/Inf.
OUTLIER_FACTOR = 16.0


def outlier_samples(table: CalibrationTable, inputs: Mapping[str, np.ndarray],
                    static: Collection[str] = ()) -> list[int]:
    """Indices (axis 0) of the samples with an input value beyond ``OUTLIER_FACTOR`` x its amax, or non-finite.

    Args:
        table: The calibration table (its graph-input ranges; inputs without a range are not checked).
        inputs: Input name -> array, samples on axis 0.
        static: Per-call constant inputs (not samples; not checked).

    Returns:
        Sorted sample indices (empty when every sample is within range).
    """
    flagged: set[int] = set()
    for name, arr in inputs.items():
        amax = table.amax.get(name)
        a = np.asarray(arr)
        if name in static or amax is None or not np.issubdtype(a.dtype, np.floating) or not a.ndim or not len(a):
            continue
        flat = np.abs(a.reshape(len(a), -1).astype(np.float64))
        bad = ~np.isfinite(flat).all(1) | (np.nan_to_num(flat, posinf=0.0).max(1) > OUTLIER_FACTOR * float(amax))
        flagged.update(int(i) for i in np.flatnonzero(bad))
    return sorted(flagged)
