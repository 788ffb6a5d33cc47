"""What dense pruning did: per-layer shapes before -> after, MACs and parameters, per-step metrics.

:func:`count_macs` measures multiply-accumulates with forward hooks on the layers that hold the
GEMMs (``Conv1d/2d/3d``, ``ConvTranspose``, ``Linear``, ``MultiheadAttention`` projections), per
sample, on real example inputs, so it counts what the model runs (a factorized or channel-pruned
layer included). Element-wise ops, pooling and normalization are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerChange:
    """One Conv/Linear layer's shape before -> after.

    Attributes:
        name: Module name (``layer1.0.conv1``).
        kind: ``Conv2d``, ``Linear``, ...
        before: ``(in_channels, out_channels)`` (``in_features, out_features``) of the dense layer.
        after: The same after pruning (``None``: the layer is gone).
        rank: The factor rank ``r`` of a low-rank layer (``m -> r -> n``), else ``None``.
        sparsity: Share of exact-zero weights after unstructured pruning, else ``None``.
        note: Why a layer was left alone (protected, rank would not cut MACs...).
    """

    name: str
    kind: str
    before: tuple[int, int]
    after: tuple[int, int] | None
    rank: int | None = None
    sparsity: float | None = None
    note: str = ""

    @property
    def changed(self) -> bool:
        """The layer lost channels, was factorized or has zeroed weights."""
        return self.after != self.before or self.rank is not None or bool(self.sparsity)


@dataclass
class StepRecord:
    """One prune -> fine-tune step of the schedule.

    Attributes:
        step: 1-based step number.
        macs: Conv/Linear MACs per sample after the step.
        params: Parameters after the step.
        metric_pruned: The metric right after pruning, before the fine-tune.
        metric: The metric after the step's fine-tune.
        loss: Mean training loss of the last fine-tune epoch (``None``: no fine-tune).
    """

    step: int
    macs: int
    params: int
    metric_pruned: float | None
    metric: float | None
    loss: float | None = None


@dataclass
class DenseResult:
    """The typed result of :func:`trtopt.pruning.api.prune_dense`.

    Attributes:
        method: ``structured``, ``lowrank`` or ``unstructured``.
        layers: One :class:`LayerChange` per Conv/Linear layer of the dense model.
        macs_before / macs_after: Conv/Linear MACs per sample (:func:`count_macs`).
        params_before / params_after: Parameter counts.
        steps: One :class:`StepRecord` per schedule step.
        metric_name: ``accuracy`` (top-1 %, labels given), else ``cosine`` (100 x mean cosine
            similarity to the dense model's outputs) and ``agreement`` (top-1 agreement %, for [N, C]
            outputs) is recorded in ``metric_extra``.
        metric_dense: The metric of the dense model (``None``: no evaluation data).
        max_drop: Allowed drop in points.
        speedup_note: What runs faster (2:4 / unstructured: nothing on dense kernels).
    """

    method: str
    layers: list[LayerChange]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    steps: list[StepRecord] = field(default_factory=list)
    metric_name: str = ""
    metric_dense: float | None = None
    max_drop: float = 1.0
    speedup_note: str = ""

    @property
    def metric_final(self) -> float | None:
        """The metric after the last step (``None``: not evaluated)."""
        return self.steps[-1].metric if self.steps else None

    @property
    def failed(self) -> bool:
        """The pruned model lost the task: its metric is more than ``max_drop`` points below dense."""
        if self.metric_dense is None or self.metric_final is None:
            return False
        return self.metric_dense - self.metric_final > self.max_drop

    @property
    def macs_ratio(self) -> float:
        """MACs after / before."""
        return self.macs_after / max(self.macs_before, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the ``--report`` file)."""
        return {"method": self.method, "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_ratio": round(self.macs_ratio, 6), "params_before": self.params_before,
                "params_after": self.params_after, "metric": self.metric_name, "metric_dense": self.metric_dense,
                "metric_final": self.metric_final, "max_drop": self.max_drop, "failed": self.failed,
                "speedup_note": self.speedup_note, "steps": [asdict(s) for s in self.steps],
                "layers": [asdict(c) for c in self.layers]}

    def lines(self) -> list[str]:
        """A one-screen summary."""
        out = [f"{self.method}: MACs {self.macs_before:,} -> {self.macs_after:,} ({100 * self.macs_ratio:.1f} %), "
               f"parameters {self.params_before:,} -> {self.params_after:,}"]
        for c in self.layers:
            if c.changed:
                extra = (f" rank {c.rank}" if c.rank is not None else
                         f" {100 * c.sparsity:.1f} % zeros" if c.sparsity else "")
                out.append(f"  {c.name:<32} {c.kind:<8} {c.before[0]}x{c.before[1]} -> "
                           f"{'-' if c.after is None else f'{c.after[0]}x{c.after[1]}'}{extra}")
        for s in self.steps:
            m = ("" if s.metric is None else f", {self.metric_name} {s.metric:.2f}" if s.loss is None
                 else f", {self.metric_name} {s.metric_pruned:.2f} -> {s.metric:.2f} fine-tuned")
            out.append(f"  step {s.step}: MACs {s.macs:,}{m}")
        if self.metric_dense is not None and self.metric_final is not None:
            verdict = "✗ FAILED" if self.failed else "✓"
            out.append(f"{verdict} {self.metric_name}: dense {self.metric_dense:.2f}, pruned {self.metric_final:.2f} "
                       f"(allowed drop {self.max_drop:g} points)")
        if self.speedup_note:
            out.append(self.speedup_note)
        return out


def _shape(m) -> tuple[int, int] | None:
    import torch.nn as nn

    if isinstance(m, nn.Linear):
        return (m.in_features, m.out_features)
    if isinstance(m, nn.modules.conv._ConvNd):
        return (m.in_channels, m.out_channels)
    return None


def layer_shapes(model) -> dict[str, tuple[str, tuple[int, int]]]:
    """Module name -> (class name, (in, out)) for every Conv/Linear layer of ``model``."""
    return {n: (type(m).__name__, s) for n, m in model.named_modules() if (s := _shape(m)) is not None}


def count_params(model) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model, args: tuple) -> int:
    """Conv/Linear multiply-accumulates per sample of one forward on ``args``.

    Args:
        model: A ``torch.nn.Module``.
        args: ``forward()`` arguments, batch on axis 0 (one sample is enough).

    Returns:
        MACs per sample: ``out.numel() / N * in_channels / groups * prod(kernel)`` per conv,
        ``out.numel() / N * in_features`` per Linear (attention's matmuls of ``MultiheadAttention``
        are counted through its projection weights only).
    """
    import math as _m

    import torch
    import torch.nn as nn

    total = [0]

    def hook(mod, inp, out):
        out = out[0] if isinstance(out, tuple) else out
        n = max(int(out.shape[0]), 1) if out.dim() > 1 else 1
        if isinstance(mod, nn.Linear):
            total[0] += out.numel() // n * mod.in_features
        else:
            total[0] += out.numel() // n * (mod.in_channels // mod.groups) * _m.prod(mod.kernel_size)

    def mha_hook(mod, inp, out):
        q = inp[0]
        tokens = q.numel() // q.shape[-1] // max(int(q.shape[0 if mod.batch_first else 1]), 1)
        total[0] += 4 * tokens * mod.embed_dim * mod.embed_dim

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
               and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]
    handles += [m.register_forward_hook(mha_hook) for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return int(total[0])
