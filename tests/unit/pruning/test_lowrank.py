"""Low-rank factorization: exact at full rank, error = dropped singular energy, never a rank that adds MACs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.pruning import LowRankConfig  # noqa: E402
from trtopt.pruning.api import prune_dense  # noqa: E402
from trtopt.pruning.lowrank import break_even, choose_rank, factor_weight, factorize_  # noqa: E402


def _weight(n=48, m=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, m, generator=g) @ torch.diag(torch.linspace(3, 0.01, m)) @ torch.randn(m, m, generator=g)


def test_factor_is_exact_at_full_rank():
    w = _weight()
    a, b, _ = factor_weight(w, min(w.shape))
    torch.testing.assert_close(b @ a, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_factor_error_is_the_dropped_singular_values_energy(rank):
    w = _weight()
    a, b, s = factor_weight(w, rank)
    err = float(((w.double() - (b @ a).double()) ** 2).sum())
    assert err == pytest.approx(float((s[rank:].double() ** 2).sum()), rel=1e-4)


def test_rank_by_energy_is_the_smallest_that_keeps_it():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert choose_rank(s, 64, 64, LowRankConfig(energy=16 / 22)) == 1
    assert choose_rank(s, 64, 64, LowRankConfig(energy=0.9)) == 2
    assert choose_rank(s, 64, 64, LowRankConfig(target_macs=0.5)) == int(0.5 * break_even(64, 64))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.conv, self.fc2 = nn.Linear(64, 96), nn.Conv2d(8, 32, 1), nn.Linear(96, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = h + self.conv(h.view(-1, 8, 3, 4)).view(-1, 32, 12).mean(1).repeat(1, 8)
        return self.fc2(h)


def _low_rank_mlp():
    torch.manual_seed(0)
    model = Mlp().eval()
    with torch.no_grad():  # fc1 of rank 6: a small rank keeps all of its energy
        model.fc1.weight.copy_(torch.randn(96, 6) @ torch.randn(6, 64) / 8)
    return model


def test_factorized_model_reports_ranks_and_cuts_macs():
    model = _low_rank_mlp()
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    result = prune_dense(model, LowRankConfig(energy=0.9999, min_features=8), {"x": x[:1]})
    fc1 = {c.name: c for c in result.layers}["fc1"]
    assert fc1.rank == 6 and fc1.before == fc1.after == (64, 96)
    assert isinstance(model.fc1, nn.Sequential) and model.fc1[0].out_features == 6
    assert result.macs_after < result.macs_before
    for c in result.layers:  # every reported rank cuts that layer's MACs
        assert c.rank is None or c.rank < break_even(*c.before)
    with torch.no_grad():
        torch.testing.assert_close(model(torch.from_numpy(x)), want, rtol=1e-3, atol=1e-3)


def test_no_rank_that_keeps_the_energy_cuts_macs_is_an_error():
    model = Mlp().eval()  # random full-rank weights
    x = np.zeros((1, 64), np.float32)
    with pytest.raises(InputError, match="changed no layer"):
        prune_dense(model, LowRankConfig(energy=1.0, min_features=8), {"x": x})
    assert isinstance(model.fc1, nn.Linear)


def test_factorize_can_shrink_an_existing_pair():
    model = _low_rank_mlp()
    factorize_(model, LowRankConfig(target_macs=0.6, min_features=8))
    r1 = model.fc2[0].out_features
    factorize_(model, LowRankConfig(target_macs=0.3, min_features=8))
    assert model.fc2[0].out_features < r1 and isinstance(model.fc2[0], nn.Linear)


@pytest.mark.parametrize("kw", [{"energy": 0}, {"energy": 1.5}, {"target_macs": 1}, {"min_features": 0}])
def test_bad_low_rank_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        LowRankConfig(**kw)
