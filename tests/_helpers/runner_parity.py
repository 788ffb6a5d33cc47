"""Which runner is wrong: trtopt's TensorRT runner vs Polygraphy's ``TrtRunner`` vs ONNX Runtime.

Used by tests/gpu/test_polygraphy_parity.py; the diagnosis itself is checked on the CPU in
tests/unit/backends/test_runner_parity.py.
"""

from __future__ import annotations

import numpy as np

#: The same engine and inputs through two runners: only summation order may differ.
RUNNER_TOL = {"rtol": 1e-5, "atol": 1e-5}


def verdict(name: str, ours: np.ndarray, polygraphy: np.ndarray, reference: np.ndarray, atol: float) -> str | None:
    """None when trtopt, Polygraphy and ONNX Runtime agree, else one line saying which one is wrong.

    ``atol`` bounds engine vs ONNX Runtime (precision of the build); the two runners on one engine
    must agree to :data:`RUNNER_TOL`.
    """
    if ours.shape != polygraphy.shape:
        return f"{name}: trtopt's runner returned shape {ours.shape}, Polygraphy's TrtRunner {polygraphy.shape}"
    same = np.allclose(ours, polygraphy, **RUNNER_TOL)
    poly_ok = polygraphy.shape == reference.shape and np.allclose(polygraphy, reference, rtol=0, atol=atol)
    ours_ok = ours.shape == reference.shape and np.allclose(ours, reference, rtol=0, atol=atol)
    if same and poly_ok:
        return None
    d_runners = float(np.max(np.abs(ours.astype(np.float64) - polygraphy)))
    if poly_ok:
        return (f"{name}: trtopt's runner is wrong: Polygraphy's TrtRunner matches ONNX Runtime on the same engine, "
                f"trtopt differs from it by up to {d_runners:.3g}")
    d_ref = float(np.max(np.abs(polygraphy.astype(np.float64) - reference))) if polygraphy.shape == reference.shape \
        else float("nan")
    if same:
        return (f"{name}: the engine is wrong, not a runner: trtopt and Polygraphy agree, both differ from ONNX "
                f"Runtime by up to {d_ref:.3g} (> {atol})")
    if ours_ok:
        return f"{name}: Polygraphy's TrtRunner differs from ONNX Runtime and from trtopt (trtopt matches ONNX Runtime)"
    return (f"{name}: all three differ: runners by up to {d_runners:.3g}, Polygraphy vs ONNX Runtime by up to "
            f"{d_ref:.3g}")
