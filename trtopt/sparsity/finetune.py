"""Masked fine-tuning of a 2:4-pruned model, with optional knowledge distillation.

The masks from :func:`trtopt.sparsity.prune_` stay exactly fixed: gradients of pruned weights
are zeroed before every optimizer step and the weights are multiplied by their mask after
it (Adam's moment estimates could otherwise move a zero weight). After training every masked
weight is checked to be exactly 0 (``masks_intact``). Losses (``ce``, ``mse``, ``kd``, a user
function) and the distillation mix are in :mod:`trtopt.sparsity.losses`.

Data: arrays (one array, or a dict ``name -> array`` for several inputs, samples on axis 0,
passed to ``forward`` positionally in dict order) with labels, or a dataloader factory
``FinetuneConfig.data = "pkg.mod:fn"`` returning an iterable of ``(inputs, labels)`` batches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.log import get_logger
from trtopt.refs import describe_exception, import_callable
from trtopt.sparsity.config import FinetuneConfig
from trtopt.sparsity.losses import distillation_loss, first, is_classifier, resolve_loss

__all__ = ["FinetuneHistory", "distillation_loss", "evaluate", "finetune_masked", "masks_intact"]

log = get_logger(__name__)


class FinetuneHistory(list):
    """One dict per epoch (``epoch``, ``loss``, ``train_accuracy`` for classifiers) plus run facts.

    Attributes:
        loss_name: The loss used (``ce``, ``mse``, ``kd`` or the function reference).
        masks_intact: Every masked weight is exactly 0 after training (checked; ``False`` never returns).
    """

    loss_name: str = ""
    masks_intact: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"loss": self.loss_name, "masks_intact": self.masks_intact, "epochs": list(self)}


def _tensor(x, what: str):
    import numpy as np
    import torch

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def _inputs(x) -> tuple[Any, ...]:
    """Arrays -> tuple of tensors (a dict gives its values in order)."""
    if isinstance(x, dict):
        if not x:
            raise InputError("x_train is an empty dict: give one array per model input")
        return tuple(_tensor(v, f"x_train['{k}']") for k, v in x.items())
    if isinstance(x, tuple | list):
        return tuple(_tensor(v, "x_train") for v in x)
    return (_tensor(x, "x_train"),)


def _as_args(inputs) -> tuple[Any, ...]:
    """A batch's inputs (tensor, tuple/list or dict) -> positional forward arguments."""
    if isinstance(inputs, dict):
        return tuple(inputs.values())
    return tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)


def _array_batches(xs: tuple, y, batch_size: int, gen) -> Iterator[tuple[tuple, Any]]:
    import torch

    order = torch.randperm(len(xs[0]), generator=gen)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield tuple(x[idx] for x in xs), (None if y is None else y[idx])


def _factory_batches(ref: str) -> Any:
    factory = import_callable(ref, "training data factory")
    try:
        data = factory()
        iter(data)
    except Exception as exc:
        raise InputError(f"training data factory '{ref}' raised {describe_exception(exc)}") from None
    # a generator would be empty from epoch 2 on, and the LR schedule needs the number of batches
    return data if hasattr(data, "__len__") and iter(data) is not data else list(data)


def _unpack(batch, ref: str):
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise InputError(f"training data factory '{ref}' must yield (inputs, labels) pairs, got "
                         f"{type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, tuple | list) else ""))
    inputs, labels = batch
    return _as_args(inputs), (None if labels is None else _tensor(labels, f"labels from '{ref}'"))


def _mask_params(model, masks: dict) -> list[tuple[str, Any, Any]]:
    from trtopt.sparsity.masks import masked_weight

    modules = dict(model.named_modules())
    out = []
    for name, mask in masks.items():
        w = masked_weight(model, name, modules)
        if w is None:
            raise InputError(f"mask for '{name}' does not match the model: no such layer")
        if tuple(mask.shape) != tuple(w.shape):
            raise InputError(f"mask for '{name}' has shape {list(mask.shape)}, "
                             f"the weight has {list(w.shape)}")
        out.append((name, w, mask.to(device=w.device, dtype=w.dtype)))
    return out


def masks_intact(model, masks: dict) -> dict[str, int]:
    """``{layer: number of masked weights that are not exactly 0}`` (empty = all masks intact)."""
    bad = {}
    for name, w, m in _mask_params(model, masks):
        n = int((w.detach()[m == 0] != 0).sum())
        if n:
            bad[name] = n
    return bad


def _forward(model, args, device, where: str):
    try:
        return model(*(a.to(device) for a in args))
    except Exception as exc:
        shapes = ", ".join(f"{list(a.shape)} {str(a.dtype).replace('torch.', '')}" for a in args)
        raise InputError(f"{where}: forward failed on a training batch ({shapes}): {describe_exception(exc)}") \
            from None


def _progress(total: int):
    """A rich progress bar on a terminal (stderr), else ``None`` (one log line per epoch instead)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("fine-tune"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(stderr=True),
                    transient=True)


def finetune_masked(model, report, x_train=None, y_train=None, config: FinetuneConfig | None = None,
                    teacher=None, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FinetuneHistory:
    """Fine-tune a pruned model with its 2:4 masks held fixed at every optimizer step.

    Args:
        model: The pruned ``torch.nn.Module`` (trained in place, returned to eval mode).
        report: The :class:`~trtopt.sparsity.prune.PruneReport` from :func:`prune_`, or a plain
            ``{module name: bool keep-mask}`` dict.
        x_train: Training inputs, samples on axis 0: an array/tensor, or a dict ``name -> array``
            for several inputs (passed to ``forward`` positionally in dict order). Ignored when
            ``config.data`` names a dataloader factory.
        y_train: Labels (integer classes for ``ce``, targets shaped like the output for ``mse``), or
            ``None`` for ``kd``.
        config: Epochs, learning rate, batch size, seed, loss, distillation weight and temperature.
        teacher: The dense model; required for ``loss = "kd"`` and when ``config.distill_alpha`` is set.
        on_epoch: Called with each epoch's record (``epoch``, ``epochs``, ``loss``, ...) when it ends (the CLI
            prints one line per epoch when stderr is not a terminal; on a terminal a progress bar with the
            running loss is shown instead).

    Returns:
        A :class:`FinetuneHistory`: one dict per epoch (``epoch``, ``loss`` = mean training loss,
        ``train_accuracy`` in percent for classifiers) with ``loss_name`` and ``masks_intact``.

    Raises:
        ConfigError: Distillation requested without a teacher.
        InputError: Data, labels or masks do not fit the model; the loss function raised; a masked
            weight is not 0 after training.
    """
    import torch

    cfg = config or FinetuneConfig()
    masks = report if isinstance(report, dict) else report.masks
    if cfg.distill_alpha is not None and teacher is None:
        raise ConfigError("finetune.distill_alpha is set but no teacher model was given")
    pure_kd = cfg.loss == "kd" or (cfg.loss == "auto" and y_train is None and cfg.data is None)
    if teacher is not None and cfg.distill_alpha is None and not pure_kd:
        log.warning("a teacher was given but finetune.distill_alpha is not set: training on labels only")
        teacher = None
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.data is not None:
        source = _factory_batches(cfg.data)
        n_samples, where = None, f"training data '{cfg.data}'"

        def epoch_batches():
            return (_unpack(b, cfg.data) for b in source)
    else:
        if x_train is None:
            raise InputError("no training data: give x_train (and y_train) or finetune.data = 'pkg.mod:fn'")
        xs = _inputs(x_train)
        y = None if y_train is None else _tensor(y_train, "y_train")
        n_samples, where = len(xs[0]), "training data"
        lengths = {len(x) for x in xs} | ({len(y)} if y is not None else set())
        if n_samples == 0 or len(lengths) != 1:
            raise InputError(f"x_train has {n_samples} samples but y_train has {len(y) if y is not None else 0}"
                             if y is not None and len(lengths) != 1 else
                             f"training inputs must have the same (non-zero) number of samples, got {sorted(lengths)}")

        def epoch_batches():
            return _array_batches(xs, y, cfg.batch_size, gen)
    pairs = _mask_params(model, masks)
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = (n_samples + cfg.batch_size - 1) // cfg.batch_size if n_samples else len(source)  # type: ignore
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs * per_epoch, 1))
    if teacher is not None:
        teacher.eval()
    history, loss_fn = FinetuneHistory(), None
    bar = _progress(cfg.epochs * per_epoch) if cfg.epochs else None
    task = bar.add_task("fine-tune", total=cfg.epochs * per_epoch, info="") if bar else None
    model.train()
    try:
        if bar:
            bar.start()
        for epoch in range(cfg.epochs):
            total, count, correct = 0.0, 0, 0
            for args, yb in epoch_batches():
                yb = None if yb is None else yb.to(device)
                opt.zero_grad()
                out = _forward(model, args, device, where)
                t_out = None
                if teacher is not None:
                    with torch.no_grad():
                        t_out = teacher(*(a.to(device) for a in args))
                if loss_fn is None:
                    loss_fn = resolve_loss(cfg.loss, cfg.distill_alpha, cfg.temperature, out, yb, teacher is not None)
                if loss_fn.name == "ce":
                    yb = yb.long()
                loss = loss_fn(out, yb, t_out)
                loss.backward()
                for _, w, m in pairs:  # pruned weights get no update signal...
                    if w.grad is not None:
                        w.grad.mul_(m)
                opt.step()
                with torch.no_grad():  # ...and are forced back to exact zero (Adam state, weight decay)
                    for _, w, m in pairs:
                        w.mul_(m)
                sched.step()
                n = len(args[0])
                total, count = total + float(loss.detach()) * n, count + n
                if loss_fn.name == "ce":
                    correct += int((first(out).argmax(1) == yb).sum())
                if bar:
                    bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {total / count:.4f}")
            if count == 0:
                raise InputError(f"{where} has no batches")
            rec = {"epoch": epoch + 1, "loss": total / count}
            if loss_fn is not None and loss_fn.name == "ce":
                rec["train_accuracy"] = 100.0 * correct / count
            history.append(rec)
            log.info("masked fine-tune epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, rec["loss"])
            if on_epoch is not None and bar is None:
                on_epoch({**rec, "epochs": cfg.epochs})
    finally:
        if bar:
            bar.stop()
        model.eval()
    bad = masks_intact(model, masks)
    if bad:  # e.g. a forward that writes to its own weights, or a tied weight updated elsewhere
        raise InputError(f"masks not intact after fine-tuning: masked weights became non-zero in {sorted(bad)} "
                         "(does forward modify weights in place, or are weights shared between layers?)")
    history.loss_name = loss_fn.name if loss_fn is not None else cfg.loss
    history.masks_intact = True
    return history


def evaluate(model, x, y, batch_size: int = 256) -> dict[str, float]:
    """Mean loss (and top-1 accuracy in percent for classifiers) of ``model`` on labelled arrays.

    PyTorch's fused Transformer fast path is off for the evaluation, as in the export.

    Args:
        model: A ``torch.nn.Module``.
        x: One array or a dict ``name -> array`` (samples on axis 0, passed positionally in order).
        y: Integer labels (cross-entropy, accuracy) or targets shaped like the output (MSE).
        batch_size: Evaluation batch size.

    Returns:
        ``{"loss": ..., "accuracy": ...}`` (``accuracy`` for classifiers only).
    """
    import torch
    import torch.nn.functional as F

    from trtopt.torch_util import transformer_fastpath_off

    xs, yt = _inputs(x), _tensor(y, "labels")
    device = next(model.parameters()).device
    total, correct, n = 0.0, 0, len(yt)
    was = model.training
    model.eval()
    with torch.no_grad(), transformer_fastpath_off():  # what the exported graph computes
        for i in range(0, n, batch_size):
            out = first(_forward(model, tuple(t[i : i + batch_size] for t in xs), device, "evaluation data"))
            yb = yt[i : i + batch_size].to(device)
            if is_classifier(out, yb):
                total += float(F.cross_entropy(out, yb.long(), reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
            else:
                if tuple(yb.shape) != tuple(out.shape):
                    return {}  # labels not comparable with the output (a task metric would be needed)
                total += float(F.mse_loss(out, yb.to(out.dtype), reduction="mean")) * len(yb)
    model.train(was)
    res = {"loss": total / max(n, 1)}
    if correct or is_classifier(out, yb):
        res["accuracy"] = 100.0 * correct / max(n, 1)
    return res
