"""Masked fine-tuning keeps every 2:4 group sparse; distillation loss is the documented formula."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.sparsity import FinetuneConfig, PruneConfig, check_2to4, finetune_masked, prune_  # noqa: E402
from trtopt.sparsity.finetune import distillation_loss  # noqa: E402


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :4].argmax(1)).astype(np.int64)
    return x, y


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_masks_stay_fixed_through_every_step(alpha):
    model = _model()
    teacher = copy.deepcopy(model).eval()
    report = prune_(model, PruneConfig(min_params=0))
    x, y = _data()
    modules = dict(model.named_modules())
    before = {n: modules[n].weight.detach().clone() for n in report.masks}
    # check the invariant after *every* optimizer step, not only at the end
    steps = []

    def check(*_args, **_kw):
        for n, mask in report.masks.items():
            w = modules[n].weight
            steps.append(check_2to4(w, axis=1) and not bool(w[~mask].any()))

    # before every forward = after every completed step (incl. re-masking)
    hook = model.register_forward_pre_hook(check)
    try:
        history = finetune_masked(model, report, x, y,
                                  FinetuneConfig(epochs=2, lr=5e-2, batch_size=32, distill_alpha=alpha),
                                  teacher=teacher if alpha is not None else None)
    finally:
        hook.remove()
    assert len(history) == 2 and {"epoch", "loss", "train_accuracy"} <= set(history[0])
    # the final weights must be exactly masked and the kept weights must have moved
    for n, mask in report.masks.items():
        w = modules[n].weight
        assert check_2to4(w, axis=1)
        assert not bool(w[~mask].any())
        assert not torch.equal(w[mask], before[n][mask])
    assert len(steps) == 2 * 3 * len(report.masks) and all(steps)
    assert not model.training


def test_distillation_loss_formula():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    T, a = 3.0, 0.25
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    expect = a * nn.functional.cross_entropy(s, y) + (1 - a) * T * T * kl
    torch.testing.assert_close(distillation_loss(s, t, y, a, T), expect)
    # alpha = 1 is plain cross-entropy
    torch.testing.assert_close(distillation_loss(s, t, y, 1.0, T), nn.functional.cross_entropy(s, y))


def test_finetune_bad_inputs():
    model = _model()
    report = prune_(model, PruneConfig(min_params=0))
    x, y = _data()
    with pytest.raises(ConfigError, match="teacher"):
        finetune_masked(model, report, x, y, FinetuneConfig(distill_alpha=0.5))
    with pytest.raises(InputError, match="samples"):
        finetune_masked(model, report, x, y[:10], FinetuneConfig(epochs=1))
    with pytest.raises(InputError, match="no such layer"):
        finetune_masked(model, {"missing": report.masks["3"]}, x, y, FinetuneConfig(epochs=1))
    with pytest.raises(ConfigError):
        FinetuneConfig(distill_alpha=1.5)
