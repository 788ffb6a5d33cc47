"""One entry point for dense pruning (structured, low-rank, unstructured), shared by ``trtopt prune`` and the recipe.

The result is a smaller ordinary ``nn.Module`` (fewer channels, or two thin layers for one wide
one): export, calibration, INT8 and engine builds treat it as any other model.

Example::

    from trtopt.pruning import StructuredConfig, ScheduleConfig, TaskData, prune_dense
    result = prune_dense(model, StructuredConfig(target_macs=0.5), {"input": x[:1]},
                         ScheduleConfig(steps=3, epochs=2), TaskData((x,), y, (x_test,), y_test))
    result.failed, result.macs_ratio, [c for c in result.layers if c.changed]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import numpy as np

from trtopt.errors import ConfigError, InputError
from trtopt.pruning.config import DenseConfig, LowRankConfig, ScheduleConfig, StructuredConfig, UnstructuredConfig
from trtopt.pruning.result import DenseResult, LayerChange, StepRecord, count_macs, count_params, layer_shapes
from trtopt.pruning.schedule import TaskData, metric, model_outputs, run_schedule
from trtopt.refs import describe_exception


def _layers(before: dict, model, facts: dict) -> list[LayerChange]:
    after = layer_shapes(model)
    ranks = {c.name: c for c in facts.get("ranks", [])}
    sparsity = facts.get("sparsity", {})
    out = []
    for name, (kind, shape) in before.items():
        rc = ranks.get(name)
        if rc is not None and rc.rank is not None:
            out.append(LayerChange(name, kind, shape, (rc.m, rc.n), rank=rc.rank))
        else:
            now = after.get(name)
            out.append(LayerChange(name, kind, shape, None if now is None else now[1], sparsity=sparsity.get(name),
                                   note=rc.note if rc is not None else ""))
    return out


def prune_dense(model, config: DenseConfig, example: Mapping[str, np.ndarray], schedule: ScheduleConfig | None = None,
                data: TaskData | None = None, on_step: Callable[[StepRecord], None] | None = None) -> DenseResult:
    """Prune ``model`` in place to a smaller dense network, in one or more steps with fine-tuning.

    Args:
        model: A ``torch.nn.Module`` (modified in place: channels removed, layers replaced by factor
            pairs, or weights zeroed).
        config: :class:`StructuredConfig`, :class:`LowRankConfig` or :class:`UnstructuredConfig`.
        example: Input name -> array (one or a few samples on axis 0, ``forward()`` order) used to
            trace the graph and count MACs.
        schedule: Steps, fine-tune epochs and distillation (default: one step, no fine-tune).
        data: Training data (fine-tune, Taylor importance) and evaluation data (per-step metric).
        on_step: Called with each step's :class:`StepRecord`.

    Returns:
        A :class:`DenseResult`: per-layer shapes before -> after (ranks, zero shares), MACs and
        parameters before -> after, per-step metrics and the verdict (``failed``).

    Raises:
        ConfigError: An unknown config type; Taylor importance or a fine-tune without training data.
        InputError: The example does not fit the model, or pruning changed nothing.
        MissingDependencyError: Structured pruning without the ``prune`` extra (torch-pruning).
    """
    import torch

    sched = schedule or ScheduleConfig()
    data = data or TaskData()
    if not isinstance(config, StructuredConfig | LowRankConfig | UnstructuredConfig):
        raise ConfigError(f"prune_dense takes a StructuredConfig, LowRankConfig or UnstructuredConfig, "
                          f"got {type(config).__name__}")
    if isinstance(config, StructuredConfig) and config.importance == "taylor" and data.train_x is None:
        raise ConfigError("prune.importance 'taylor' needs training data (gradients of the loss)")
    if sched.epochs > 0 and data.train_x is None:
        raise ConfigError("a fine-tune (schedule.epochs > 0) needs training data")
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in example.values())
    try:
        macs_before = count_macs(model, args)
    except Exception as exc:
        shapes = ", ".join(str(list(a.shape)) for a in args)
        raise InputError(f"the example inputs ({shapes}) do not fit the model: {describe_exception(exc)}") from None
    teacher = copy.deepcopy(model).eval()
    before, params_before = layer_shapes(model), count_params(model)
    dense_out = model_outputs(teacher, data.eval_x) if data.eval_x is not None and data.eval_y is None else None
    metric_dense = metric(teacher, data, dense_out)
    steps, facts = run_schedule(model, teacher, config, args, sched, data, on_step)
    result = DenseResult(
        method=config.method, layers=_layers(before, model, facts), macs_before=macs_before,
        macs_after=count_macs(model, args), params_before=params_before, params_after=count_params(model),
        steps=steps, metric_name="" if data.eval_x is None else ("accuracy" if data.eval_y is not None else "cosine"),
        metric_dense=metric_dense, max_drop=float(sched.max_drop))
    if isinstance(config, UnstructuredConfig):
        from trtopt.pruning.unstructured import SPEED_NOTE

        result.speedup_note = SPEED_NOTE
    if not any(c.changed for c in result.layers):
        raise InputError(f"{config.method} pruning changed no layer (every layer protected, excluded, too small, "
                         "or no rank below m*n/(m+n) keeps the requested energy)")
    return result
