"""Layer eligibility and the one pruning entry point, :func:`prune_`.

A layer is pruned only when TensorRT could run it on sparse tensor cores and it is worth it:
a Conv (groups=1), a Linear, or an ``nn.MultiheadAttention`` input projection (the packed QKV
``in_proj_weight`` [3E, E], a Linear in all but name; ``q/k/v_proj_weight`` when key/value sizes
differ) whose reduction channel count is a multiple of 4, not tiny, and selected by the
include/exclude patterns. Every other layer with a weight (recurrent layers, other modules with a
2-D ``weight``) is reported with the reason it stays dense.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger
from trtopt.patterns import matches
from trtopt.sparsity.config import PruneConfig
from trtopt.sparsity.masks import apply_masks_, check_2to4, kept_magnitude_share, magnitude_mask, masked_weight

log = get_logger(__name__)


@dataclass
class LayerRecord:
    """What happened to one Conv/Linear layer.

    Attributes:
        name: Module path (``features.3``), or the parameter path of an attention projection
            (``enc.layers.0.self_attn.in_proj_weight``); masks are keyed by it.
        kind: Module class (``Conv2d``, ``Linear``, ``MultiheadAttention``).
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
        """Counts and the pruned share of all layer weights (Conv, Linear, attention projections, others)."""
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


#: ``nn.MultiheadAttention`` projection weights that are pruned like a Linear weight ([out, in], groups along in)
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def layer_weights(model) -> list[tuple[str, str, Any, Any, str]]:
    """Every layer weight of ``model``, in module order: ``(name, kind, module, weight, reason)``.

    ``name`` is the module path for Conv/Linear layers (the weight is ``module.weight``) and the
    parameter path for attention projections (``attn.in_proj_weight``; ``attn.out_proj`` is an
    ``nn.Linear``). ``reason`` is non-empty for a weight trtopt never prunes (a recurrent layer,
    another module with a 2-D ``weight``); embeddings are not layers of this kind.
    """
    import torch.nn as nn

    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
            if getattr(mod, "weight", None) is not None:
                out.append((name, type(mod).__name__, mod, mod.weight, ""))
        elif isinstance(mod, nn.MultiheadAttention):
            out.extend((f"{name}.{attr}" if name else attr, type(mod).__name__, mod, getattr(mod, attr), "")
                       for attr in ATTENTION_WEIGHTS if getattr(mod, attr, None) is not None)
        elif isinstance(mod, nn.RNNBase):
            w = next(p for n, p in mod.named_parameters(recurse=False) if n.startswith("weight"))
            out.append((name, type(mod).__name__, mod, w,
                        f"recurrent layer ({type(mod).__name__}): TensorRT has no 2:4 kernels for it"))
        elif name and not isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
            w = mod._parameters.get("weight")
            if w is not None and w.ndim >= 2 and w.is_floating_point():
                out.append((name, type(mod).__name__, mod, w,
                            f"{type(mod).__name__} is not a Conv, Linear or attention layer: not pruned"))
    return out


def _ineligible_reason(mod, w, name: str, cfg: PruneConfig, first_conv: bool) -> str:
    import torch.nn as nn

    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
        return "transposed conv: not a TensorRT sparse-math layer"
    owner = name.rpartition(".")[0] if isinstance(mod, nn.MultiheadAttention) else None
    if cfg.include and not (matches(name, cfg.include) or (owner and matches(owner, cfg.include))):
        return "not selected by prune.include"
    if cfg.exclude and (matches(name, cfg.exclude) or (owner and matches(owner, cfg.exclude))):
        return "excluded by prune.exclude"
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
    """List every layer weight of ``model`` (:func:`layer_weights`) with its 2:4 eligibility and reason.

    Args:
        model: A ``torch.nn.Module``.
        cfg: Eligibility thresholds and include/exclude patterns (an attention projection matches
            by its own name or by its ``nn.MultiheadAttention`` module's name).

    Returns:
        Records in module order.
    """
    import torch.nn as nn

    records, seen_conv = [], False
    for name, kind, mod, w, never in layer_weights(model):
        is_conv = isinstance(mod, nn.modules.conv._ConvNd)
        first = is_conv and not seen_conv
        seen_conv = seen_conv or is_conv
        reason = never or _ineligible_reason(mod, w, name, cfg, first)
        records.append(LayerRecord(name=name, kind=kind, shape=tuple(w.shape), eligible=not reason, reason=reason))
    return records


def prune_(model, config: PruneConfig | None = None, calib_inputs: Any = None) -> PruneReport:
    """Prune every eligible Conv/Linear layer and attention projection of ``model`` to 2:4, in place.

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
        why = "; ".join(f"'{r.name}': {r.reason}" for r in records[:4]) or "it has no Conv/Linear/attention layer"
        raise InputError(f"no layer is eligible for 2:4 pruning ({why})")
    if cfg.method == "sparsegpt" and calib_inputs is None:
        raise ConfigError("prune.method = 'sparsegpt' needs calibration inputs (calib_inputs)")
    modules = dict(model.named_modules())
    names = [r.name for r in eligible]
    layers = [r.name for r in eligible if r.kind != "MultiheadAttention"]  # modules with a .weight
    dense = {n: masked_weight(model, n, modules).detach().clone() for n in names}
    notes: dict[str, Any] = {}
    if cfg.method == "permutation":
        from trtopt.sparsity.permutation import permute_for_sparsity_

        notes["permutation"] = permute_for_sparsity_(model, layers, cfg)
        notes["permutation"].update({n: {"permuted": False, "note": "not permuted: attention projection"}
                                     for n in names if n not in layers})
        dense = {n: masked_weight(model, n, modules).detach().clone() for n in names}
    if cfg.method == "sparsegpt":
        from trtopt.sparsity.sparsegpt import sparsegpt_prune_

        masks, notes["sparsegpt"] = (sparsegpt_prune_(model, layers, calib_inputs, cfg) if layers
                                     else ({}, {"fallback": {}, "rel_error": {}}))
        for n in (n for n in names if n not in masks):  # attention projections: no layer input to hook
            masks[n] = magnitude_mask(masked_weight(model, n, modules), axis=1)
            notes["sparsegpt"]["fallback"][n] = "SparseGPT: attention projection, magnitude used"
        masks = {n: masks[n] for n in names}
    else:
        masks = {n: magnitude_mask(masked_weight(model, n, modules), axis=1) for n in names}
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
        if not check_2to4(masked_weight(model, r.name, modules), axis=1):  # pragma: no cover - invariant
            raise RuntimeError(f"internal error: {r.name} is not 2:4 after pruning")
    report = PruneReport(method=cfg.method, layers=records, masks=masks, notes=notes)
    log.info("2:4 %s: pruned %d of %d layers", cfg.method, len(eligible), len(records))
    return report
