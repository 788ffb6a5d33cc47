"""The one-screen summary of a pruning run: layers pruned / kept and why, weight shares, masks, metrics.

:func:`prune_summary` builds the JSON-friendly dict (also written into ``trtopt prune --report``);
:func:`summary_lines` renders it as a few lines of text.
"""

from __future__ import annotations

import re
from typing import Any

#: pruned layers listed by name before "+N more"
_SHOW = 6


def prune_summary(model, report, masks_ok: bool, finetuned: bool,
                  metrics: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Facts of a pruning run.

    Args:
        model: The pruned ``torch.nn.Module``.
        report: Its :class:`~trtopt.sparsity.prune.PruneReport`.
        masks_ok: Every masked weight is exactly 0 (checked after pruning / fine-tuning).
        finetuned: Whether a masked fine-tune ran.
        metrics: ``{stage: {"loss": .., "accuracy": ..}}`` for ``dense``, ``pruned``, ``fine-tuned``.

    Returns:
        ``report.summary()`` plus ``zeroed_weights``, ``zeroed_share_all_weights`` (of every model
        parameter), ``zeroed_share_conv_linear`` (of every layer weight of the report: Conv, Linear,
        attention projections and the layers kept dense),
        ``pruned_layers``, ``kept_layers`` (``{reason: [names]}``), ``masks_intact``, ``finetuned``, ``metrics``.
    """
    s = dict(report.summary())
    zeroed = sum(int((~m.bool()).sum()) for m in report.masks.values())
    all_w = sum(p.numel() for p in model.parameters())
    conv_lin = sum(_numel(r.shape) for r in report.layers)
    kept: dict[str, list[str]] = {}
    for r in report.layers:
        if not r.pruned:
            kept.setdefault(r.reason or "not selected", []).append(r.name)
    s.update({
        "zeroed_weights": zeroed,
        "zeroed_share_all_weights": zeroed / all_w if all_w else 0.0,
        "zeroed_share_conv_linear": zeroed / conv_lin if conv_lin else 0.0,
        "pruned_layers": [r.name for r in report.layers if r.pruned],
        "kept_layers": kept,
        "masks_intact": bool(masks_ok),
        "finetuned": bool(finetuned),
        "metrics": dict(metrics or {}),
    })
    return s


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _names(names: list[str], show: int | None = _SHOW) -> str:
    """Quoted layer names (``'0', 'features.3'``: a Sequential's layers are numbers), ``+N more`` after ``show``."""
    shown = names if show is None else names[:show]
    more = f" (+{len(names) - len(shown)} more)" if len(names) > len(shown) else ""
    return ", ".join(f"'{n}'" for n in shown) + more


def summary_lines(s: dict[str, Any]) -> list[str]:
    """Render :func:`prune_summary` as text lines: every layer kept dense is named, with its reason."""
    lines = [f"2:4 pruning ({s['method']}): {s['pruned']} of {s['layers']} layers pruned "
             "(Conv, Linear, attention projections)"]
    if s["pruned_layers"]:
        lines.append(f"  pruned: {_names(s['pruned_layers'])}")
    groups: dict[str, list[str]] = {}  # reasons that differ only in numbers share a line
    for reason, names in s["kept_layers"].items():
        groups.setdefault(re.sub(r"\d+", "#", reason), []).extend((reason, n) for n in names)
    for items in sorted(groups.values(), key=len, reverse=True):
        lines.append(f"  kept dense ({len(items)}): {items[0][0]}: {_names([n for _, n in items], show=None)}")
    lines.append(f"  weights zeroed: {s['zeroed_weights']:,} = {100 * s['zeroed_share_all_weights']:.1f}% of all "
                 f"weights, {100 * s['zeroed_share_conv_linear']:.1f}% of layer weights")
    when = "after fine-tuning" if s["finetuned"] else "after pruning"
    lines.append(f"  masks intact {when}: {'yes' if s['masks_intact'] else 'NO'}")
    m = s.get("metrics") or {}
    on = f" on {s['metrics_on']}" if s.get("metrics_on") else ""
    for key, label, fmt in (("accuracy", "accuracy", "{:.2f}%"), ("loss", "task loss", "{:.4f}")):
        vals = [(stage, v[key]) for stage, v in m.items() if key in v]
        if vals:
            lines.append(f"  {label}{on}: " + " -> ".join(f"{stage} {fmt.format(v)}" for stage, v in vals))
    return lines
