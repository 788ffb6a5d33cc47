"""Iterative prune -> fine-tune with distillation: reaches the target step by step, judges the task, KD loss."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trtopt.errors import ConfigError  # noqa: E402
from trtopt.optional import is_installed  # noqa: E402
from trtopt.pruning import LowRankConfig, ScheduleConfig, StructuredConfig, UnstructuredConfig  # noqa: E402
from trtopt.pruning.api import prune_dense  # noqa: E402
from trtopt.pruning.schedule import TaskData, kd_loss  # noqa: E402

needs_torch_pruning = pytest.mark.skipif(not is_installed("torch_pruning"), reason="the [prune] extra is not installed")


@pytest.fixture(scope="module")
def digits():
    from trtopt.models.digits import load_digits_split, train_digits_cnn

    split = load_digits_split()
    model = train_digits_cnn(split, epochs=8, width=8)
    return model, split


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_kd_loss_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    y = rng.integers(0, 7, 5)
    alpha, temp = 0.3, 2.5
    ps, pt = _softmax(s / temp), _softmax(t / temp)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    ce = -np.log(_softmax(s)[np.arange(5), y]).mean()
    want = alpha * temp**2 * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha, temp)
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert float(kd_loss(torch.tensor(s), torch.tensor(t), None, alpha, temp)) == pytest.approx(temp**2 * kl)


@pytest.mark.parametrize("config", [pytest.param(StructuredConfig(target_macs=0.5), marks=needs_torch_pruning),
                                    LowRankConfig(target_macs=0.5, min_features=8),
                                    UnstructuredConfig(amount=0.5)], ids=lambda c: c.method)
def test_iterative_schedule_reaches_the_target_and_reports_each_step(digits, config):
    dense, split = digits
    model = copy.deepcopy(dense)
    steps = []
    data = TaskData((split.x_train[:400],), split.y_train[:400], (split.x_test,), split.y_test)
    result = prune_dense(model, config, {"input": split.x_test[:1]},
                         ScheduleConfig(steps=3, epochs=1, kd_alpha=0.5, max_drop=100), data, on_step=steps.append)
    assert [s.step for s in result.steps] == [1, 2, 3] and steps == result.steps
    assert all(s.metric is not None and s.metric_pruned is not None and s.loss is not None for s in result.steps)
    assert result.metric_name == "accuracy" and result.metric_dense is not None
    if config.method == "unstructured":
        assert all(c.sparsity == pytest.approx(0.5, abs=0.02) for c in result.layers)
    else:
        macs = [s.macs for s in result.steps]
        assert macs == sorted(macs, reverse=True) and macs[0] < result.macs_before
    if config.method == "structured":
        assert result.macs_after <= 0.5 * result.macs_before
    if config.method == "lowrank":  # the MACs target holds per factorized layer (the 3x3 convs stay dense)
        ranked = [c for c in result.layers if c.rank is not None]
        assert ranked and all(c.rank * sum(c.before) <= 0.5 * c.before[0] * c.before[1] for c in ranked)
    assert not result.failed


@needs_torch_pruning
def test_a_pruned_model_that_loses_the_task_is_reported_as_failed(digits):
    dense, split = digits
    model = copy.deepcopy(dense)
    data = TaskData(eval_x=(split.x_test,), eval_y=split.y_test)
    result = prune_dense(model, StructuredConfig(target_macs=0.05, max_layer_ratio=0.95, protect_stem=False),
                         {"input": split.x_test[:1]}, ScheduleConfig(max_drop=1.0), data)
    assert result.metric_dense - result.metric_final > 1.0 and result.failed
    assert any(line.startswith("✗") for line in result.lines())
    assert result.to_dict()["failed"] is True


@needs_torch_pruning
def test_without_labels_the_metric_is_cosine_to_the_dense_model(digits):
    dense, split = digits
    model = copy.deepcopy(dense)
    data = TaskData(train_x=(split.x_train[:400],), eval_x=(split.x_test,))
    result = prune_dense(model, StructuredConfig(target_macs=0.7), {"input": split.x_test[:1]},
                         ScheduleConfig(steps=1, epochs=1, max_drop=100), data)
    assert result.metric_name == "cosine" and result.metric_dense == pytest.approx(100.0)
    assert 0 < result.metric_final < 100.0


def test_fine_tune_without_training_data_is_a_config_error(digits):
    dense, split = digits
    with pytest.raises(ConfigError, match="training data"):
        prune_dense(copy.deepcopy(dense), StructuredConfig(), {"input": split.x_test[:1]}, ScheduleConfig(epochs=1))
