"""Layer eligibility and the one pruning entry point, :func:`prune_`.

A layer is pruned only when TensorRT could run it on sparse tensor cores and it is worth it:
a Conv (groups=1) or Linear whose reduction channel count is a multiple of 4, not tiny, and
selected by the include/exclude patterns. Every other layer is reported with the reason.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger
from trtopt.sparsity.config import PruneConfig
from trtopt.sparsity.masks import apply_masks_, check_2to4, kept_magnitude_share, magnitude_mask

log = get_logger(__name__)


@dataclass
class LayerRecord:
    """What happened to one Conv/Linear layer.

    Attributes:
        name: Module path (``features.3``).
        kind: Module class (``Conv2d``, ``Linear``).
        shape: Weight shape.
        eligible: Whether the layer qualifies for 2:4.
        reason: Why it is not eligible (or a note on how it was pruned).
        pruned: Whether a 2:4 mask was applied.
        kept_magnitude_share: ``sum|w_kept| / sum|w_dense|`` (magnitude before any weight update).
        permuted: Whether its input channels were permuted before pruning.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    eligible: bool
    reason: str = ""
    pruned: bool = False
    kept_magnitude_share: float | None = None
    permuted: bool = False


@dataclass
class PruneReport:
    """Result of :func:`prune_`.

    Attributes:
        method: The pruning method used.
        layers: One :class:`LayerRecord` per Conv/Linear layer, in module order.
        masks: ``{module name: bool keep-mask}`` of every pruned layer (weight shape).
        notes: Method-specific details (permutation gains, SparseGPT errors).
    """

    method: str
    layers: list[LayerRecord]
    masks: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def pruned_layers(self) -> list[LayerRecord]:
        """The layers that carry a 2:4 mask."""
        return [r for r in self.layers if r.pruned]

    def summary(self) -> dict[str, Any]:
        """Counts and the pruned share of all Conv/Linear weights."""
        total = sum(_numel(r.shape) for r in self.layers)
        pruned = sum(_numel(r.shape) for r in self.pruned_layers)
        kept = [r.kept_magnitude_share for r in self.pruned_layers if r.kept_magnitude_share is not None]
        return {
            "method": self.method, "layers": len(self.layers),
            "eligible": sum(r.eligible for r in self.layers), "pruned": len(self.pruned_layers),
            "pruned_weight_share": pruned / total if total else 0.0,
            "mean_kept_magnitude_share": sum(kept) / len(kept) if kept else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (masks omitted)."""
        return {"summary": self.summary(), "layers": [asdict(r) for r in self.layers], "notes": self.notes}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def name_matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Return whether ``name`` matches any fnmatch glob or ``re:<regex>`` pattern."""
    for p in patterns:
        if p.startswith("re:"):
            if re.search(p[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, p):
            return True
    return False


def _ineligible_reason(mod, name: str, cfg: PruneConfig, first_conv: bool) -> str:
    import torch.nn as nn

    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
        return "transposed conv: not a TensorRT sparse-math layer"
    if cfg.include and not name_matches(name, cfg.include):
        return "not selected by prune.include"
    if cfg.exclude and name_matches(name, cfg.exclude):
        return "excluded by prune.exclude"
    w = mod.weight
    if not w.is_floating_point():
        return f"weight dtype {w.dtype} is not floating point"
    out_ch, red = w.shape[0], w.shape[1]
    groups = getattr(mod, "groups", 1)
    if groups != 1:
        kind = "depthwise" if groups == getattr(mod, "in_channels", -1) else "grouped"
        return f"{kind} conv (groups={groups}): TensorRT has no sparse kernels for it"
    if first_conv and red < max(cfg.min_in_features, 4):
        return f"first conv on {red} image channel(s): too few input channels for 2:4"
    if red % 4:
        return f"{red} input channels is not a multiple of 4"
    if red < cfg.min_in_features:
        return f"only {red} input channels (< min_in_features={cfg.min_in_features})"
    if out_ch < cfg.min_out_features:
        return f"only {out_ch} output channels (< min_out_features={cfg.min_out_features})"
    if w.numel() < cfg.min_params:
        return f"tiny layer: {w.numel()} weights (< min_params={cfg.min_params})"
    return ""


def classify_layers(model, cfg: PruneConfig) -> list[LayerRecord]:
    """List every Conv/Linear layer of ``model`` with its 2:4 eligibility and reason.

    Args:
        model: A ``torch.nn.Module``.
        cfg: Eligibility thresholds and include/exclude patterns.

    Returns:
        Records in module order.
    """
    import torch.nn as nn

    records, seen_conv = [], False
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) or getattr(mod, "weight", None) is None:
            continue
        first = isinstance(mod, nn.modules.conv._ConvNd) and not seen_conv
        seen_conv = seen_conv or isinstance(mod, nn.modules.conv._ConvNd)
        reason = _ineligible_reason(mod, name, cfg, first)
        records.append(LayerRecord(name=name, kind=type(mod).__name__, shape=tuple(mod.weight.shape),
                                   eligible=not reason, reason=reason))
    return records


def prune_(model, config: PruneConfig | None = None, calib_inputs: Any = None) -> PruneReport:
    """Prune every eligible Conv/Linear layer of ``model`` to 2:4, in place.

    Args:
        model: A ``torch.nn.Module`` (its weights are modified; masked weights become exact zeros).
        config: Method, eligibility thresholds and include/exclude patterns.
        calib_inputs: Calibration batches for ``sparsegpt``: a tensor/array (split into batches
            of 64), or an iterable of tensors, tuples of tensors, or keyword dicts.

    Returns:
        A :class:`PruneReport` with one record per layer and the keep-masks.

    Raises:
        InputError: No layer is eligible.
        ConfigError: ``sparsegpt`` without calibration inputs.
    """
    cfg = config or PruneConfig()
    records = classify_layers(model, cfg)
    eligible = [r for r in records if r.eligible]
    if not eligible:
        why = "; ".join(f"{r.name}: {r.reason}" for r in records[:4]) or "it has no Conv/Linear layer"
        raise InputError(f"no layer is eligible for 2:4 pruning ({why})")
    if cfg.method == "sparsegpt" and calib_inputs is None:
        raise ConfigError("prune.method = 'sparsegpt' needs calibration inputs (calib_inputs)")
    modules = dict(model.named_modules())
    names = [r.name for r in eligible]
    dense = {n: modules[n].weight.detach().clone() for n in names}
    notes: dict[str, Any] = {}
    if cfg.method == "permutation":
        from trtopt.sparsity.permutation import permute_for_sparsity_

        notes["permutation"] = permute_for_sparsity_(model, names, cfg)
        dense = {n: modules[n].weight.detach().clone() for n in names}
    if cfg.method == "sparsegpt":
        from trtopt.sparsity.sparsegpt import sparsegpt_prune_

        masks, notes["sparsegpt"] = sparsegpt_prune_(model, names, calib_inputs, cfg)
    else:
        masks = {n: magnitude_mask(modules[n].weight, axis=1) for n in names}
    apply_masks_(model, masks)
    perm_info = notes.get("permutation", {})
    for r in eligible:
        r.pruned = True
        r.kept_magnitude_share = round(kept_magnitude_share(dense[r.name], masks[r.name]), 6)
        r.permuted = bool(perm_info.get(r.name, {}).get("permuted", False))
        if cfg.method == "permutation" and not r.permuted:
            r.reason = perm_info.get(r.name, {}).get("note", "not permuted")
        if cfg.method == "sparsegpt" and r.name in notes["sparsegpt"].get("fallback", {}):
            r.reason = notes["sparsegpt"]["fallback"][r.name]
        if not check_2to4(modules[r.name].weight, axis=1):  # pragma: no cover - invariant
            raise RuntimeError(f"internal error: {r.name} is not 2:4 after pruning")
    report = PruneReport(method=cfg.method, layers=records, masks=masks, notes=notes)
    log.info("2:4 %s: pruned %d of %d Conv/Linear layers", cfg.method, len(eligible), len(records))
    return report
