"""Masked fine-tuning of a 2:4-pruned model, with optional knowledge distillation.

The masks from :func:`trtopt.sparsity.prune_` stay exactly fixed: gradients of pruned weights
are zeroed before every optimizer step and the weights are multiplied by their mask after
it (Adam's moment estimates could otherwise move a zero weight). With a dense teacher the
loss is ``alpha * CE(student, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))``
(Hinton et al.); the ``T^2`` keeps the soft-target gradients on the scale of the hard ones.
"""

from __future__ import annotations

from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger
from trtopt.sparsity.config import FinetuneConfig

log = get_logger(__name__)


def _tensor(x, what: str):
    import numpy as np
    import torch

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def distillation_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float):
    """``alpha * CE + (1 - alpha) * T^2 * KL(soft teacher || soft student)``.

    Args:
        student_logits: ``[N, classes]`` logits of the model being trained.
        teacher_logits: ``[N, classes]`` logits of the dense teacher.
        labels: ``[N]`` integer labels.
        alpha: Weight of the hard-label cross-entropy.
        temperature: Softmax temperature ``T``.

    Returns:
        Scalar loss tensor.
    """
    import torch.nn.functional as F

    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * hard + (1.0 - alpha) * temperature**2 * soft


def _mask_params(model, masks: dict) -> list[tuple[Any, Any]]:
    modules = dict(model.named_modules())
    pairs = []
    for name, mask in masks.items():
        if name not in modules or getattr(modules[name], "weight", None) is None:
            raise InputError(f"mask for '{name}' does not match the model: no such layer")
        w = modules[name].weight
        if tuple(mask.shape) != tuple(w.shape):
            raise InputError(f"mask for '{name}' has shape {list(mask.shape)}, "
                             f"the weight has {list(w.shape)}")
        pairs.append((w, mask.to(device=w.device, dtype=w.dtype)))
    return pairs


def finetune_masked(model, report, x_train, y_train, config: FinetuneConfig | None = None,
                    teacher=None) -> list[dict[str, float]]:
    """Fine-tune a pruned classifier with its 2:4 masks held fixed at every optimizer step.

    Args:
        model: The pruned ``torch.nn.Module`` (trained in place, returned to eval mode).
        report: The :class:`~trtopt.sparsity.prune.PruneReport` from :func:`prune_`, or a plain
            ``{module name: bool keep-mask}`` dict.
        x_train: Training inputs (numpy or tensor, samples on axis 0).
        y_train: Integer labels.
        config: Epochs, learning rate, batch size, seed, distillation weight and temperature.
        teacher: The dense model; required when ``config.distill_alpha`` is set.

    Returns:
        One dict per epoch: ``epoch``, ``loss`` (mean training loss), ``train_accuracy`` (percent).

    Raises:
        ConfigError: Distillation requested without a teacher.
        InputError: Data or masks do not fit the model.
    """
    import torch

    cfg = config or FinetuneConfig()
    masks = report if isinstance(report, dict) else report.masks
    if cfg.distill_alpha is not None and teacher is None:
        raise ConfigError("finetune.distill_alpha is set but no teacher model was given")
    if teacher is not None and cfg.distill_alpha is None:
        log.warning("a teacher was given but finetune.distill_alpha is not set: training on labels only")
        teacher = None
    x, y = _tensor(x_train, "x_train"), _tensor(y_train, "y_train").long()
    device = next(model.parameters()).device
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"x_train has {len(x)} samples but y_train has {len(y)}")
    pairs = _mask_params(model, masks)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if teacher is not None:
        teacher.eval()
    history = []
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad()
            logits = model(xb)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                loss = distillation_loss(logits, t_logits, yb, float(cfg.distill_alpha), cfg.temperature)
            else:
                loss = torch.nn.functional.cross_entropy(logits, yb)
            loss.backward()
            for w, m in pairs:  # pruned weights get no update signal...
                if w.grad is not None:
                    w.grad.mul_(m)
            opt.step()
            with torch.no_grad():  # ...and are forced back to exact zero (Adam state, weight decay)
                for w, m in pairs:
                    w.mul_(m)
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        history.append({"epoch": epoch + 1, "loss": total / len(x),
                        "train_accuracy": 100.0 * correct / len(x)})
        log.info("masked fine-tune epoch %d: loss %.4f", epoch + 1, history[-1]["loss"])
    model.eval()
    return history
