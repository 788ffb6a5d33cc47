"""PyTorch -> ONNX export.

Uses the TorchScript-based exporter (``dynamo=False``): it is fast, needs no onnxscript,
and names nodes after module paths (``/features/3/Conv``), which the layer-wise
comparison and the accuracy budget map back to PyTorch module names (``features.3``).

Every export (the CLI, the recipe and the Python API all come here):

- runs with PyTorch's fused Transformer fast path off (:func:`trtopt.torch_util.transformer_fastpath_off`), so
  ``nn.TransformerEncoder`` / ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` export;
- keeps the exporter's console output (its Torch IR graph dump on errors) off the terminal: it
  is logged at debug level, and an exporter error is one line naming the operator and the fix;
- checks the file (full ONNX checker + ONNX Runtime load) and, for a model exported from input
  specs, its outputs against PyTorch (:mod:`trtopt.export_parity`) before renaming it into place,
  so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from trtopt.errors import ConfigError, InputError
from trtopt.fileio import atomic_path
from trtopt.log import get_logger
from trtopt.models.reference import check_forward
from trtopt.torch_util import transformer_fastpath_off

log = get_logger(__name__)

#: operators of PyTorch's fused Transformer / MultiheadAttention fast path (no ONNX export)
FASTPATH_OPS = frozenset({"aten::_nested_tensor_from_mask", "aten::_nested_tensor_from_mask_left_aligned",
                          "aten::_transformer_encoder_layer_fwd", "aten::_native_multi_head_attention",
                          "aten::to_padded_tensor"})


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


def _flush_native_stdio() -> None:
    """Flush C stdio buffers (what native code printed must land in the capture, not after it)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _captured_console(captured: list[str]) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 (native code's stdout/stderr) to a temporary file for the block.

    Args:
        captured: Receives the captured text (one string) when the block ends, errors included.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [(fd, os.dup(fd)) for fd in (1, 2)]
    except OSError:  # no such descriptors (an embedded interpreter): nothing to capture
        saved = []
    with tempfile.TemporaryFile() as tmp:
        try:
            for fd, _ in saved:
                os.dup2(tmp.fileno(), fd)
            yield
        finally:
            _flush_native_stdio()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", errors="replace"))


def export_error(exc: BaseException, opset: int) -> InputError:
    """One-line :class:`InputError` for an exception of ``torch.onnx.export``.

    An unsupported operator is named together with the fix: the opset that added it when PyTorch
    knows one, else a rewrite of that part of ``forward`` or a custom symbolic.
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    m = re.search(r"operator '([^']+)'", first)
    if m is None or "not supported" not in first:
        return InputError(f"ONNX export failed: {first[:400]}")
    op = m.group(1)
    added = re.search(r"added in version (\d+)", text)
    if added:
        fix = (f"export with opset {added.group(1)} (trtopt export --opset {added.group(1)}, "
               f"[export] opset = {added.group(1)} in a recipe)")
    elif op in FASTPATH_OPS:
        fix = ("it is PyTorch's fused Transformer/MultiheadAttention kernel, which trtopt turns off for export, "
               "called here anyway (a TorchScript-scripted module or a direct call): export the plain nn.Module")
    else:
        fix = ("rewrite that part of forward() with operators ONNX has, or register a symbolic for it "
               "(torch.onnx.register_custom_op_symbolic)")
    return InputError(f"ONNX export failed: operator '{op}' has no ONNX export at opset {opset}: {fix}")


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
        InputError: The exporter failed (one line: the reason; for an unsupported operator its name
            and the fix).
    """
    return _export(model, sample_input, path, config, dynamic_axes)


def _export(model, sample_input, path, config: ExportConfig | None, dynamic_axes, check: Callable[[Path], None]
            | None = None) -> Path:
    import torch

    from trtopt.onnx.io import verify_onnx_file

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
    console: list[str] = []
    try:
        with atomic_path(path) as tmp:
            try:
                with transformer_fastpath_off(), warnings.catch_warnings(), torch.no_grad(), \
                        _captured_console(console):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        model, args, str(tmp), dynamo=False, opset_version=cfg.opset,
                        input_names=list(cfg.input_names), output_names=list(cfg.output_names),
                        dynamic_axes=axes, do_constant_folding=cfg.constant_folding,
                    )
            except Exception as exc:
                raise export_error(exc, cfg.opset) from exc
            finally:
                if "".join(console).strip():
                    log.debug("ONNX exporter output:\n%s", "".join(console).rstrip())
            verify_onnx_file(tmp, label=str(path))  # full checker + ONNX Runtime load before the rename
            if check is not None:
                check(tmp)
    finally:
        model.train(was_training)
    log.info("exported %s (opset %d)", path, cfg.opset)
    return Path(path)


def export_with_specs(model, specs, path: str | os.PathLike[str], config: ExportConfig | None = None) -> Path:
    """Export ``model`` with example inputs, names and dynamic axes taken from input specs.

    Before the file is renamed into place its outputs are compared with the model's in ONNX Runtime
    at the example shapes and at another size of every dynamic axis
    (:func:`trtopt.export_parity.check_parity`).

    Args:
        model: ``torch.nn.Module``; ``forward`` takes the inputs in ``specs`` order.
        specs: :class:`~trtopt.inputs.InputSpec` per input.
        path: Destination ``.onnx``.
        config: Opset, output names, constant folding (input names come from ``specs``).

    Returns:
        The written path.

    Raises:
        InputError: The forward or the exporter fails on the declared inputs, or the exported graph
            does not run or does not compute the model's outputs at a declared shape.
    """
    from trtopt.export_parity import check_parity
    from trtopt.inputs import dynamic_axes, example_tensors

    cfg = config or ExportConfig()
    outs = check_forward(model, specs)
    names = cfg.output_names  # not chosen: the same neutral names as a recipe's user model
    names = names or (("output",) if len(outs) == 1 else tuple(f"output_{i}" for i in range(len(outs))))
    if len(names) != len(outs):
        raise ConfigError(f"{len(names)} output name(s) {list(names)} for a model with {len(outs)} output(s)")
    cfg = replace(cfg, input_names=tuple(s.name for s in specs), output_names=names)

    def check(tmp: Path) -> None:
        with transformer_fastpath_off():
            check_parity(model, specs, tmp, names)

    return _export(model, example_tensors(specs), path, cfg, dynamic_axes(specs), check=check)
