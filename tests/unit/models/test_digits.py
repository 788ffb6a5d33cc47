"""The digits demo workload: a disjoint, seeded split and a model that saves whole."""

from __future__ import annotations

import numpy as np
import pytest


def test_digits_split_is_disjoint_and_seeded():
    from trtopt.models.digits import load_digits_split

    a, b = load_digits_split(seed=0), load_digits_split(seed=0)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(a.x_train) + len(a.x_calib) + len(a.x_test) == 1797
    train = {x.tobytes() for x in a.x_train}
    overlap = sum(x.tobytes() in train for x in a.x_test)
    # load_digits has a few exact duplicate images; the split itself must not share indices
    assert overlap < 5
    assert a.x_test.dtype == np.float32 and a.x_test.shape[1:] == (1, 8, 8)
    assert a.x_test.min() >= 0.0 and a.x_test.max() <= 1.0


def test_digits_model_can_be_saved_whole(tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.models.digits import make_digits_cnn

    model = make_digits_cnn(width=4)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
