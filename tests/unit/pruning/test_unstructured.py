"""Unstructured L1 pruning is permanent, hits the amount, and says it does not speed anything up."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from trtopt.errors import InputError  # noqa: E402
from trtopt.pruning import UnstructuredConfig  # noqa: E402
from trtopt.pruning.api import prune_dense  # noqa: E402


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()


@pytest.mark.parametrize("global_ranking", [False, True])
def test_unstructured_pruning_is_permanent_and_reaches_the_amount(global_ranking):
    model = _net()
    x = np.ones((1, 1, 8, 8), np.float32)
    result = prune_dense(model, UnstructuredConfig(amount=0.6, global_ranking=global_ranking), {"x": x})
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())
    assert not list(model.named_buffers())
    zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight"))
    total = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert zeros == round(0.6 * total) if global_ranking else abs(zeros / total - 0.6) < 0.01
    assert result.macs_after == result.macs_before
    assert "do not make TensorRT or ONNX Runtime faster" in "\n".join(result.lines())


def test_excluding_every_layer_is_an_error():
    with pytest.raises(InputError, match="selected no"):
        prune_dense(_net(), UnstructuredConfig(exclude=("*",)), {"x": np.ones((1, 1, 8, 8), np.float32)})
