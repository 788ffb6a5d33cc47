"""PyTorch -> ONNX export.

Uses the TorchScript-based exporter (``dynamo=False``): it is fast, needs no onnxscript,
and names nodes after module paths (``/features/3/Conv``), which the layer-wise
comparison and the accuracy budget map back to PyTorch module names (``features.3``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from trtopt.errors import ConfigError, InputError
from trtopt.fileio import atomic_path
from trtopt.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """Options of :func:`export_onnx`.

    Attributes:
        opset: ONNX opset (13..21). 17+ keeps LayerNorm one node.
        dynamic_batch: Make axis 0 of every input/output dynamic (``batch``).
        input_names: Graph input names, in ``forward`` argument order.
        output_names: Graph output names; empty = automatic: ``logits`` for :func:`export_onnx` (built-in
            workloads), ``output`` (one output) or ``output_0, output_1, ...`` for :func:`export_with_specs`.
        constant_folding: Fold constants (BatchNorm into Conv, etc.).
    """

    opset: int = 17
    dynamic_batch: bool = True
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ()
    constant_folding: bool = True

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 21:
            raise ConfigError(f"export.opset must be between 13 and 21, got {self.opset}")
        if not self.input_names:
            raise ConfigError("export.input_names must not be empty")
        object.__setattr__(self, "input_names", tuple(self.input_names))
        object.__setattr__(self, "output_names", tuple(self.output_names))


def export_onnx(model, sample_input, path: str | os.PathLike[str], config: ExportConfig | None = None,
                dynamic_axes: dict[str, dict[int, str]] | None = None) -> Path:
    """Export a PyTorch module to ONNX, check it, and write it atomically.

    Args:
        model: ``torch.nn.Module`` (put in eval mode for export).
        sample_input: A tensor, or a tuple of tensors, matching ``config.input_names``.
        path: Destination ``.onnx`` file.
        config: Export options.
        dynamic_axes: Explicit ``{name: {axis: dim name}}`` (from input specs); replaces
            ``config.dynamic_batch``'s axis-0-only rule for the inputs (outputs keep a dynamic axis 0
            when any input's axis 0 is dynamic).

    Returns:
        The written path.

    Raises:
        ConfigError: Names do not match the number of inputs.
        InputError: The exporter failed (message names the reason).
    """
    import torch

    from trtopt.onnx_graph import verify_onnx_file

    cfg = config or ExportConfig()
    args = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    if len(args) != len(cfg.input_names):
        raise ConfigError(f"{len(args)} sample inputs but {len(cfg.input_names)} input names")
    if not cfg.output_names:
        cfg = replace(cfg, output_names=("logits",))
    axes = {n: {0: "batch"} for n in (*cfg.input_names, *cfg.output_names)} if cfg.dynamic_batch else None
    if dynamic_axes is not None:
        batch = next((ax[0] for ax in dynamic_axes.values() if 0 in ax), None)
        axes = {**dynamic_axes, **({n: {0: batch} for n in cfg.output_names} if batch else {})}
    was_training = model.training
    model.eval()
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, args, str(tmp), dynamo=False, opset_version=cfg.opset,
                    input_names=list(cfg.input_names), output_names=list(cfg.output_names),
                    dynamic_axes=axes, do_constant_folding=cfg.constant_folding,
                )
        except Exception as exc:
            raise InputError(f"ONNX export failed: {str(exc).strip().splitlines()[0]}") from exc
        verify_onnx_file(tmp, label=str(path))  # full checker + ONNX Runtime load before the rename
    model.train(was_training)
    log.info("exported %s (opset %d)", path, cfg.opset)
    return Path(path)


def export_with_specs(model, specs, path: str | os.PathLike[str], config: ExportConfig | None = None) -> Path:
    """Export ``model`` with example inputs, names and dynamic axes taken from input specs.

    Args:
        model: ``torch.nn.Module``; ``forward`` takes the inputs in ``specs`` order.
        specs: :class:`~trtopt.inputs.InputSpec` per input.
        path: Destination ``.onnx``.
        config: Opset, output names, constant folding (input names come from ``specs``).

    Returns:
        The written path.

    Raises:
        InputError: The forward or the exporter fails on the declared inputs.
    """
    from trtopt.inputs import dynamic_axes, example_tensors
    from trtopt.models.reference import check_forward

    cfg = config or ExportConfig()
    outs = check_forward(model, specs)
    names = cfg.output_names  # not chosen: the same neutral names as a recipe's user model
    names = names or (("output",) if len(outs) == 1 else tuple(f"output_{i}" for i in range(len(outs))))
    if len(names) != len(outs):
        raise ConfigError(f"{len(names)} output name(s) {list(names)} for a model with {len(outs)} output(s)")
    cfg = replace(cfg, input_names=tuple(s.name for s in specs), output_names=names)
    return export_onnx(model, example_tensors(specs), path, cfg, dynamic_axes=dynamic_axes(specs))
