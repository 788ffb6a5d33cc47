"""Configs of the 2:4 sparsity stages: :class:`PruneConfig` and :class:`FinetuneConfig`.

Both are frozen dataclasses with TOML-friendly fields, so a recipe's ``[prune]`` and
``[finetune]`` tables construct them with ``Config(**table)``. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trtopt.errors import ConfigError
from trtopt.patterns import check_patterns

#: pruning methods understood by :func:`trtopt.sparsity.prune_`
METHODS = ("magnitude", "permutation", "sparsegpt")
#: the only sparsity pattern TensorRT's sparse tensor cores execute
SUPPORTED_PATTERN = "2:4"
#: built-in fine-tuning losses (besides a ``package.module:function`` reference)
LOSSES = ("auto", "ce", "mse", "kd")


def check_pattern(pattern: str) -> None:
    """Raise :class:`ConfigError` unless ``pattern`` is ``"2:4"``.

    Args:
        pattern: An ``N:M`` string.
    """
    if str(pattern).replace(" ", "") != SUPPORTED_PATTERN:
        raise ConfigError(
            f"sparsity pattern '{pattern}' is not supported: TensorRT's sparse tensor cores run only 2:4 "
            "(2 non-zeros in every group of 4 along the reduction axis)"
        )


@dataclass(frozen=True)
class PruneConfig:
    """Options of :func:`trtopt.sparsity.prune_`.

    Attributes:
        method: ``magnitude`` (keep the 2 largest |w| per group of 4), ``permutation``
            (input-channel permutation search first, then magnitude) or ``sparsegpt``
            (one-shot Hessian-based pruning with weight updates; needs calibration inputs).
        pattern: Sparsity pattern; only ``"2:4"`` is accepted.
        include: Module-name patterns to prune (fnmatch globs, or ``re:<regex>``); empty = all.
        exclude: Module-name patterns never to prune (same syntax); wins over ``include``.
        min_in_features: Skip layers whose reduction channel count (Conv C, Linear in) is below
            this (catches the first conv on 1-4 image channels).
        min_out_features: Skip layers with fewer output channels than this.
        min_params: Skip tiny layers with fewer weights than this.
        perm_max_iters: Upper bound on channel swaps per layer in the permutation search.
        perm_max_channels: Layers with more input channels than this are not permuted
            (the search is O(C^2) memory per step).
        sparsegpt_damp: Hessian dampening, as a fraction of the mean diagonal.
        sparsegpt_blocksize: Columns processed per lazy-update block (multiple of 4).
        sparsegpt_sequential: Collect each layer's calibration inputs from the already pruned
            preceding layers (more accurate, one forward pass per layer) instead of all at once.
    """

    method: str = "magnitude"
    pattern: str = SUPPORTED_PATTERN
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_in_features: int = 8
    min_out_features: int = 4
    min_params: int = 256
    perm_max_iters: int = 2000
    perm_max_channels: int = 1024
    sparsegpt_damp: float = 0.01
    sparsegpt_blocksize: int = 128
    sparsegpt_sequential: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"prune.method must be one of {', '.join(METHODS)}, got '{self.method}'")
        check_pattern(self.pattern)
        for name in ("include", "exclude"):
            val = getattr(self, name)
            val = (val,) if isinstance(val, str) else tuple(val)
            check_patterns(val, f"prune.{name}")
            object.__setattr__(self, name, val)
        ints = ("min_in_features", "min_out_features", "min_params", "perm_max_iters", "perm_max_channels")
        for name in ints:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"prune.{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if not 0.0 <= self.sparsegpt_damp < 1.0:
            raise ConfigError(f"prune.sparsegpt_damp must be in [0, 1), got {self.sparsegpt_damp}")
        if self.sparsegpt_blocksize <= 0 or self.sparsegpt_blocksize % 4:
            raise ConfigError(f"prune.sparsegpt_blocksize must be a positive multiple of 4, got "
                              f"{self.sparsegpt_blocksize}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of :func:`trtopt.sparsity.finetune_masked`.

    Attributes:
        epochs: Passes over the training data.
        lr: Adam learning rate (cosine-decayed to 0).
        batch_size: Mini-batch size.
        seed: Seed of the shuffling order.
        distill_alpha: ``None`` trains on labels only; a value in [0, 1] distils from the dense
            teacher with ``loss = alpha * CE + (1 - alpha) * T^2 * KL(soft_teacher || soft_student)``.
        temperature: Softmax temperature ``T`` of the distillation targets.
        weight_decay: Adam weight decay.
        loss: ``auto`` (``ce`` when the labels are integers and the output is ``[N, C]``, else ``mse``),
            ``ce`` (cross-entropy on class labels), ``mse`` (regression / dense targets), ``kd`` (pure
            distillation from the teacher, no labels) or ``package.module:function`` called as
            ``fn(outputs, labels) -> scalar tensor`` (``outputs``: the model's tensor or tuple).
        data: ``package.module:function`` returning an iterable of ``(inputs, labels)`` batches
            (inputs: a tensor, a tuple of tensors or a dict, passed to ``forward`` positionally);
            used instead of the arrays when set.
    """

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    distill_alpha: float | None = None
    temperature: float = 4.0
    weight_decay: float = 0.0
    loss: str = "auto"
    data: str | None = None

    def __post_init__(self) -> None:
        from trtopt.refs import is_import_ref

        if self.loss not in LOSSES and not is_import_ref(str(self.loss)):
            raise ConfigError(f"finetune.loss must be one of {', '.join(LOSSES)} or package.module:function, "
                              f"got '{self.loss}'")
        if self.data is not None and not is_import_ref(str(self.data)):
            raise ConfigError(f"finetune.data must be a dataloader factory package.module:function, got '{self.data}'")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"finetune.epochs must be a non-negative integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ConfigError(f"finetune.batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"finetune.lr must be a positive number, got {self.lr!r}")
        if self.distill_alpha is not None and not 0.0 <= float(self.distill_alpha) <= 1.0:
            raise ConfigError(f"finetune.distill_alpha must be in [0, 1] (or absent), "
                              f"got {self.distill_alpha}")
        if not self.temperature > 0:
            raise ConfigError(f"finetune.temperature must be positive, got {self.temperature}")
        if self.weight_decay < 0:
            raise ConfigError(f"finetune.weight_decay must be >= 0, got {self.weight_decay}")
