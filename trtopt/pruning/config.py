"""Configs of dense pruning: :class:`StructuredConfig`, :class:`LowRankConfig`, :class:`UnstructuredConfig`.

Each is a frozen dataclass checked in ``__post_init__`` (TOML-friendly fields, so a recipe's
``[prune]`` table constructs one with ``Config(**table)``), and each names the method it selects,
so :func:`trtopt.pruning.api.prune_dense` dispatches on the config's type. :class:`ScheduleConfig`
adds the iterative prune -> fine-tune loop with distillation. The 2:4 config stays
:class:`trtopt.sparsity.PruneConfig`. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trtopt.errors import ConfigError
from trtopt.patterns import check_patterns

#: channel-importance criteria of :class:`StructuredConfig`
IMPORTANCE = ("l1", "l2", "bn_scale", "taylor")


def _patterns(cfg, name: str, what: str) -> None:
    val = getattr(cfg, name)
    val = (val,) if isinstance(val, str) else tuple(val)
    check_patterns(val, f"{what}.{name}")
    object.__setattr__(cfg, name, val)


def _fraction(value, what: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < 1):
        raise ConfigError(f"{what} must be in (0, 1), got {value!r}")


@dataclass(frozen=True)
class StructuredConfig:
    """Options of structured (channel / filter / hidden-unit / head) pruning.

    The network stays consistent: coupled layers (both sides of a residual add, the inputs of a concat,
    a depthwise conv and its producer, BatchNorm, an ``nn.MultiheadAttention`` block's projections,
    split per head) lose the same channels, found by dependency-graph tracing (DepGraph, Fang et al., CVPR 2023, through
    ``torch-pruning``).

    Attributes:
        target_macs: Fraction of the dense multiply-accumulates (Conv/Linear, per sample) to keep,
            in (0, 1): channels are removed in small steps until the model is at or below it.
        importance: ``l1`` / ``l2`` (filter weight magnitude), ``bn_scale`` (|gamma| of the following
            BatchNorm, Liu et al. 2017 "Network Slimming") or ``taylor`` (first-order Taylor
            |w * dL/dw|, Molchanov et al. 2019; needs training data).
        global_ranking: Rank channels across layers (one global threshold) instead of the same ratio
            in every layer.
        max_layer_ratio: Never remove more than this share of one layer's channels.
        protect: Module-name patterns never pruned at their output (fnmatch globs or ``re:REGEX``).
        protect_stem: Keep the first conv / linear layer's outputs.
        protect_head: Keep the outputs of layers that produce the model's outputs (classifier heads).
        round_to: Keep channel counts multiples of this (``None``: any count). The default 8 matters:
            ONNX Runtime's CPU convolutions (MLAS, blocked NCHWc layout) and tensor cores want channel
            counts in multiples of 8; with odd counts a model at half the MACs can run slower than the
            dense one (``bench/structured_prune.py --round-to 1``).
    """

    target_macs: float = 0.5
    importance: str = "l1"
    global_ranking: bool = False
    max_layer_ratio: float = 0.9
    protect: tuple[str, ...] = ()
    protect_stem: bool = True
    protect_head: bool = True
    round_to: int | None = 8

    method = "structured"

    def __post_init__(self) -> None:
        _fraction(self.target_macs, "prune.target_macs")
        _fraction(self.max_layer_ratio, "prune.max_layer_ratio")
        if self.importance not in IMPORTANCE:
            raise ConfigError(f"prune.importance must be one of {', '.join(IMPORTANCE)}, got '{self.importance}'")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise ConfigError(f"prune.round_to must be a positive integer (or absent), got {self.round_to!r}")
        _patterns(self, "protect", "prune")


@dataclass(frozen=True)
class LowRankConfig:
    """Options of low-rank (truncated SVD) factorization of Linear layers and 1x1 convs.

    A layer ``W [n, m]`` becomes ``(U_r S_r) @ Vh_r``: two layers ``m -> r -> n`` (Eckart-Young: the
    best rank-``r`` approximation in Frobenius norm; its squared error is the energy of the dropped
    singular values). A rank is used only when it cuts MACs, ``r * (m + n) < m * n``.

    Attributes:
        energy: Keep the smallest rank whose singular values hold this share of ``sum(s**2)``, in (0, 1].
        target_macs: Instead of ``energy``: each factorized layer keeps this fraction of its MACs,
            ``r = floor(target_macs * m * n / (m + n))``.
        include: Module-name patterns to factorize (empty: every eligible layer).
        exclude: Module-name patterns never factorized (wins over ``include``).
        convs: Also factorize 1x1 convs (groups 1).
        min_features: Skip layers with ``min(m, n)`` below this.
    """

    energy: float | None = 0.9
    target_macs: float | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    convs: bool = True
    min_features: int = 16

    method = "lowrank"

    def __post_init__(self) -> None:
        if self.target_macs is not None:
            _fraction(self.target_macs, "prune.target_macs")
            object.__setattr__(self, "energy", None)
        elif self.energy is None or not (isinstance(self.energy, (int, float)) and 0 < self.energy <= 1):
            raise ConfigError(f"prune.energy must be in (0, 1] (or set prune.target_macs), got {self.energy!r}")
        if not isinstance(self.min_features, int) or self.min_features < 1:
            raise ConfigError(f"prune.min_features must be a positive integer, got {self.min_features!r}")
        _patterns(self, "include", "prune")
        _patterns(self, "exclude", "prune")


@dataclass(frozen=True)
class UnstructuredConfig:
    """Options of unstructured L1-magnitude pruning (``torch.nn.utils.prune.l1_unstructured``, made permanent).

    The zeros make a compressed file smaller; TensorRT and ONNX Runtime run the dense layers at the
    same speed (only 2:4 runs faster, on sparse tensor cores).

    Attributes:
        amount: Share of each layer's weights set to zero, in (0, 1).
        global_ranking: One magnitude threshold across all layers
            (``torch.nn.utils.prune.global_unstructured``) instead of ``amount`` per layer.
        include: Module-name patterns to prune (empty: every Conv/Linear).
        exclude: Module-name patterns never pruned.
    """

    amount: float = 0.5
    global_ranking: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    method = "unstructured"

    def __post_init__(self) -> None:
        _fraction(self.amount, "prune.amount")
        _patterns(self, "include", "prune")
        _patterns(self, "exclude", "prune")


@dataclass(frozen=True)
class ScheduleConfig:
    """The iterative prune -> fine-tune loop with knowledge distillation from the dense model.

    Step ``i`` of ``steps`` prunes to ``i / steps`` of the way to the target, then fine-tunes for
    ``epochs`` epochs with ``loss = kd_alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - kd_alpha)
    * CE(labels)`` on pre-softmax logits (Hinton et al. 2015; pure distillation without labels).

    Attributes:
        steps: Prune steps to reach the target (1: one shot).
        epochs: Fine-tune epochs after each step (0: no fine-tune).
        lr: Adam learning rate of each fine-tune (cosine-decayed within it).
        batch_size: Fine-tune batch size.
        kd_alpha: Weight of the distillation term, in [0, 1] (0: labels only).
        temperature: Softmax temperature ``T`` of the distillation.
        max_drop: Allowed loss of the metric below dense, in points (accuracy %, or 100 x cosine /
            top-1 agreement without labels); more is a failed result.
        seed: Seed of the shuffling order.
    """

    steps: int = 1
    epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    kd_alpha: float = 0.5
    temperature: float = 4.0
    max_drop: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"schedule.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"schedule.epochs must be a non-negative integer, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"schedule.lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.kd_alpha, (int, float)) and 0 <= self.kd_alpha <= 1):
            raise ConfigError(f"schedule.kd_alpha must be in [0, 1], got {self.kd_alpha!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ConfigError(f"schedule.temperature must be positive, got {self.temperature!r}")
        if not (isinstance(self.max_drop, (int, float)) and self.max_drop >= 0):
            raise ConfigError(f"schedule.max_drop must be >= 0 points, got {self.max_drop!r}")


DenseConfig = StructuredConfig | LowRankConfig | UnstructuredConfig
