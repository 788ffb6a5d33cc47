"""Fine-tuning losses: ``ce``, ``mse``, ``kd`` or a user function, each optionally mixed with distillation.

The loss of :func:`trtopt.sparsity.finetune_masked` is resolved once per run by :func:`resolve_loss`:

- ``ce``: cross-entropy on integer class labels, output ``[N, C]``; with a teacher and ``alpha``:
  ``alpha * CE + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))`` (Hinton et al., 2015;
  the ``T^2`` keeps the soft-target gradients on the scale of the hard ones).
- ``mse``: mean squared error to float targets of the output's shape; with a teacher:
  ``alpha * MSE(s, y) + (1 - alpha) * MSE(s, t)`` (feature/logit matching for non-classifiers).
- ``kd``: distillation only (no labels): the KL term above for ``[N, C]`` outputs, ``MSE(s, t)`` otherwise.
- ``package.module:function``: ``fn(outputs, labels) -> scalar tensor`` on the model's raw outputs
  (a tensor or a tuple); with a teacher the distillation term is mixed in as for ``ce``/``mse``.
- ``auto``: ``ce`` when the labels are integers and the output is ``[N, C]``, else ``mse``; ``kd`` when
  there are no labels but a teacher.

Built-in losses use the model's first output when it returns a tuple.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.refs import describe_exception, import_callable


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
    return alpha * hard + (1.0 - alpha) * soft_kl(student_logits, teacher_logits, temperature)


def soft_kl(student_logits, teacher_logits, temperature: float):
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, batch mean (Hinton et al.)."""
    import torch.nn.functional as F

    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return temperature**2 * soft


def first(outputs):
    """The first tensor of a model output (tensor, tuple or list)."""
    return outputs[0] if isinstance(outputs, tuple | list) else outputs


def is_classifier(out, labels) -> bool:
    """Integer labels ``[N]`` and a ``[N, C]`` output: cross-entropy applies."""
    import torch

    return (out.dim() == 2 and labels is not None and labels.dim() == 1
            and not torch.is_floating_point(labels) and labels.dtype != torch.bool)


def _distill_term(s, t, temperature: float):
    import torch.nn.functional as F

    return soft_kl(s, t, temperature) if s.dim() == 2 else F.mse_loss(s, t.to(s.dtype))


class Loss:
    """A resolved fine-tuning loss: ``loss(outputs, labels, teacher_outputs) -> scalar``.

    Attributes:
        name: ``ce``, ``mse``, ``kd`` or the function reference.
        needs_labels: Whether batches must carry labels.
        needs_teacher: Whether teacher outputs are required (``kd``, or distillation with ``alpha``).
    """

    def __init__(self, name: str, alpha: float | None, temperature: float,
                 fn: Callable[..., Any] | None = None) -> None:
        self.name, self.alpha, self.temperature, self.fn = name, alpha, temperature, fn
        self.needs_labels = name != "kd"
        self.needs_teacher = name == "kd" or alpha is not None

    def __call__(self, outputs, labels, teacher_outputs=None):
        """Scalar loss of one batch (``teacher_outputs`` needed when :attr:`needs_teacher`)."""
        import torch
        import torch.nn.functional as F

        s = first(outputs)
        if self.name == "kd":
            return _distill_term(s, first(teacher_outputs), self.temperature)
        if self.fn is not None:
            try:
                base = self.fn(outputs, labels)
            except Exception as exc:  # user code: one line naming it
                raise InputError(f"loss '{self.name}' raised {describe_exception(exc)}") from None
            if not isinstance(base, torch.Tensor) or base.numel() != 1:
                shape = list(base.shape) if isinstance(base, torch.Tensor) else type(base).__name__
                raise InputError(f"loss '{self.name}' must return a scalar tensor, got {shape}")
            base = base.reshape(())
        elif self.name == "ce":
            if not is_classifier(s, labels):
                raise InputError(f"loss 'ce' needs integer class labels [N] and a [N, C] output; got output "
                                 f"{list(s.shape)}, labels {list(labels.shape)} {labels.dtype} (use --loss mse)")
            if self.alpha is not None:
                return distillation_loss(s, first(teacher_outputs), labels, self.alpha, self.temperature)
            base = F.cross_entropy(s, labels)
        else:  # mse
            if tuple(labels.shape) != tuple(s.shape):
                raise InputError(f"loss 'mse' needs targets shaped like the output {list(s.shape)}, "
                                 f"got labels {list(labels.shape)}")
            base = F.mse_loss(s, labels.to(s.dtype))
        if self.alpha is None:
            return base
        return self.alpha * base + (1.0 - self.alpha) * _distill_term(s, first(teacher_outputs), self.temperature)


def resolve_loss(name: str, alpha: float | None, temperature: float, outputs, labels, has_teacher: bool) -> Loss:
    """Pick the loss for a run from its name and the first batch.

    Args:
        name: ``auto``, ``ce``, ``mse``, ``kd`` or ``package.module:function``.
        alpha: Distillation weight of the label loss, or ``None`` (no distillation).
        temperature: Softmax temperature of the KL term.
        outputs: The model's output on the first batch (decides ``auto``).
        labels: The first batch's labels (tensor) or ``None``.
        has_teacher: Whether a dense teacher was given.

    Raises:
        ConfigError: ``kd`` or ``alpha`` without a teacher.
        InputError: Labels missing where the loss needs them; the function does not import.
    """
    fn = None
    if name == "auto":
        if labels is None:
            if not has_teacher:
                raise InputError("the training data has no labels: add a 'labels' array (one per sample), or "
                                 "distil from the dense model with --loss kd")
            name = "kd"
        else:
            name = "ce" if is_classifier(first(outputs), labels) else "mse"
    elif name not in ("ce", "mse", "kd"):
        fn = import_callable(name, "loss")
    if name == "kd":
        if not has_teacher:
            raise ConfigError("loss 'kd' distils from the dense model: no teacher was given")
        return Loss("kd", None, temperature)
    if labels is None:
        raise InputError(f"loss '{name}' needs labels but the training data has none: add a 'labels' array "
                         "(one per sample), or use --loss kd (distillation only)")
    if alpha is not None and not has_teacher:
        raise ConfigError("finetune.distill_alpha is set but no teacher model was given")
    return Loss(name, alpha, temperature, fn)
