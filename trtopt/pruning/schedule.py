"""The iterative prune -> fine-tune loop with knowledge distillation, and its per-step metric.

Step ``i`` of ``N`` prunes ``i / N`` of the way to the target (structured: MACs fraction
``1 - (1 - target) * i / N``; low-rank: retained energy or MACs likewise, re-factorizing earlier
pairs; unstructured: ``amount * i / N`` zeros, held fixed while fine-tuning), then fine-tunes with
:func:`trtopt.sparsity.finetune.finetune_masked` (empty masks for channel-pruned and factorized
models) distilling from the dense teacher (:func:`kd_loss`). The metric after each step is top-1
accuracy with labels, else 100 x the mean cosine similarity to the dense model's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtopt.pruning.config import DenseConfig, LowRankConfig, ScheduleConfig, StructuredConfig, UnstructuredConfig
from trtopt.pruning.result import StepRecord


@dataclass
class TaskData:
    """Data of the schedule, arrays in ``forward()`` argument order, samples on axis 0.

    Attributes:
        train_x: Training inputs (tuple of arrays) for the fine-tune and Taylor importance, or ``None``.
        train_y: Integer labels of ``train_x`` (``None``: pure distillation from the dense model).
        eval_x: Evaluation inputs for the per-step metric (``None``: no metric).
        eval_y: Labels of ``eval_x`` (``None``: metric = cosine similarity to the dense outputs).
    """

    train_x: tuple[np.ndarray, ...] | None = None
    train_y: np.ndarray | None = None
    eval_x: tuple[np.ndarray, ...] | None = None
    eval_y: np.ndarray | None = None

    @classmethod
    def of(cls, workload: Any) -> TaskData:
        """The data of a :class:`~trtopt.models.workload.Workload` (its ``as_feeds`` gives ``forward()`` order)."""
        def arrays(x):
            return None if x is None else tuple(workload.as_feeds(x).values())

        return cls(arrays(workload.train_x), workload.train_y, arrays(workload.eval_x), workload.eval_y)


def kd_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float):
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)`` (Hinton et al. 2015).

    Args:
        student_logits: ``[N, C]`` pre-softmax logits of the pruned model.
        teacher_logits: ``[N, C]`` pre-softmax logits of the dense model.
        labels: ``[N]`` integer labels, or ``None`` (pure distillation, ``alpha`` taken as 1).
        alpha: Weight of the distillation term, in [0, 1].
        temperature: ``T`` (the ``T^2`` keeps soft-target gradients on the scale of the hard ones).

    Returns:
        Scalar loss tensor (KL as the batch mean).
    """
    import torch.nn.functional as F

    from trtopt.sparsity.losses import soft_kl

    soft = soft_kl(student_logits, teacher_logits, temperature)
    if labels is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def model_outputs(model, xs: tuple[np.ndarray, ...], batch: int = 256):
    """The first output of ``model`` on arrays ``xs`` (``forward()`` order), eval mode, one tensor ``[N, ...]``."""
    import torch

    from trtopt.sparsity.losses import first

    outs = []
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(xs[0]), batch):
            outs.append(first(model(*(torch.from_numpy(np.ascontiguousarray(x[i : i + batch])) for x in xs))))
    model.train(was)
    return torch.cat(outs)


def metric(model, data: TaskData, dense_outputs=None) -> float | None:
    """Top-1 accuracy (%) with labels, else 100 x mean cosine similarity to ``dense_outputs`` (``None``: no data)."""
    import torch.nn.functional as F

    if data.eval_x is None:
        return None
    out = model_outputs(model, data.eval_x)
    if data.eval_y is not None:
        return float(100.0 * (out.argmax(1).numpy() == data.eval_y).mean())
    return float(100.0 * F.cosine_similarity(out.flatten(1), dense_outputs.flatten(1), dim=1).mean())


def _taylor_grad(model, teacher, data: TaskData, batch: int) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F

    from trtopt.sparsity.losses import first

    xs = tuple(torch.from_numpy(np.ascontiguousarray(x[:batch])) for x in data.train_x or ())
    y = None if data.train_y is None else torch.from_numpy(np.asarray(data.train_y[:batch])).long()

    def grad() -> None:
        out = first(model(*xs))
        with torch.no_grad():
            target = y if y is not None else first(teacher(*xs)).argmax(1)
        F.cross_entropy(out, target).backward()

    return grad


def _finetune(model, teacher, data: TaskData, sched: ScheduleConfig, masks: dict) -> float | None:
    from trtopt.sparsity.config import FinetuneConfig
    from trtopt.sparsity.finetune import finetune_masked

    if sched.epochs == 0 or data.train_x is None:
        return None
    labels = data.train_y is not None
    # finetune_masked weighs the label loss by distill_alpha: alpha_label = 1 - kd_alpha
    ft = FinetuneConfig(epochs=sched.epochs, lr=sched.lr, batch_size=sched.batch_size, seed=sched.seed,
                        temperature=sched.temperature, loss="auto" if labels else "kd",
                        distill_alpha=(1.0 - sched.kd_alpha) if labels and sched.kd_alpha > 0 else None)
    history = finetune_masked(model, masks, dict(enumerate(data.train_x)), data.train_y, ft,
                              teacher=teacher if (not labels or sched.kd_alpha > 0) else None)
    return float(history[-1]["loss"]) if history else None


def run_schedule(model, teacher, config: DenseConfig, example: tuple, sched: ScheduleConfig, data: TaskData,
                 on_step: Callable[[StepRecord], None] | None = None) -> tuple[list[StepRecord], dict[str, Any]]:
    """Prune ``model`` to ``config``'s target in ``sched.steps`` steps, fine-tuning after each.

    Args:
        model: The model to prune, in place.
        teacher: A frozen dense copy (distillation, metric reference).
        config: The pruning method's config.
        example: ``forward()`` arguments (tensors) for tracing and MAC counting.
        sched: Steps, fine-tune and distillation options.
        data: Training and evaluation arrays.
        on_step: Called with each step's record.

    Returns:
        The step records, and what the method reports per layer: ``{"ranks": [RankChoice...]}`` for
        low-rank, ``{"sparsity": {name: share}}`` for unstructured, ``{}`` for structured.
    """
    from trtopt.pruning.result import count_macs, count_params

    dense_out = model_outputs(teacher, data.eval_x) if data.eval_x is not None and data.eval_y is None else None
    facts: dict[str, Any] = {}
    pruner = None
    if isinstance(config, StructuredConfig):
        from trtopt.pruning.structured import StructuredPruner

        grad = _taylor_grad(model, teacher, data, sched.batch_size) if config.importance == "taylor" else None
        pruner = StructuredPruner(model, config, example, grad_fn=grad)
    records: list[StepRecord] = []
    for i in range(1, sched.steps + 1):
        share = i / sched.steps
        masks: dict = {}
        if isinstance(config, StructuredConfig):
            pruner.prune_to(1 - (1 - config.target_macs) * share)  # type: ignore[union-attr]
        elif isinstance(config, LowRankConfig):
            from trtopt.pruning.lowrank import factorize_

            facts["ranks"] = factorize_(model, config, shrink=share)
        elif isinstance(config, UnstructuredConfig):
            from dataclasses import replace

            from trtopt.pruning.unstructured import prune_unstructured_

            facts["sparsity"] = prune_unstructured_(model, replace(config, amount=config.amount * share))
            mods = dict(model.named_modules())
            masks = {n: mods[n].weight.detach() != 0 for n in facts["sparsity"]}
        before_ft = metric(model, data, dense_out)
        loss = _finetune(model, teacher, data, sched, masks)
        after_ft = metric(model, data, dense_out) if loss is not None else before_ft
        rec = StepRecord(i, count_macs(model, example), count_params(model), before_ft, after_ft, loss)
        records.append(rec)
        if on_step is not None:
            on_step(rec)
    if isinstance(config, UnstructuredConfig):
        mods = dict(model.named_modules())
        facts["sparsity"] = {n: round(float((mods[n].weight == 0).float().mean()), 6) for n in facts["sparsity"]}
    return records, facts
