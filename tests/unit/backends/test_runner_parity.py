"""CPU check of the diagnosis the GPU parity test prints (tests/gpu/test_polygraphy_parity.py)."""

from __future__ import annotations

import numpy as np

from _helpers.runner_parity import verdict


def test_verdict_names_the_wrong_side():
    # CPU check of the diagnosis itself (it is what the first GPU run will read).
    ref = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    off = ref + 0.5
    assert verdict("t", ref.copy(), ref.copy(), ref, atol=1e-3) is None
    assert "trtopt's runner is wrong" in verdict("t", off, ref.copy(), ref, atol=1e-3)
    assert "the engine is wrong" in verdict("t", off, off.copy(), ref, atol=1e-3)
    assert "Polygraphy's TrtRunner differs" in verdict("t", ref.copy(), off, ref, atol=1e-3)
    assert "returned shape" in verdict("t", ref[:2], ref, ref, atol=1e-3)
