"""Model references: how a user names *their* model, the same in the CLI, recipes and Python.

Three forms (see ``docs/your-model.md``):

- ``package.module:function`` (recommended): an importable factory returning a ``torch.nn.Module``;
  optional ``weights = "file.pt"`` is a state dict read with ``torch.load(weights_only=True)``.
- ``model.pt``: a whole module saved with ``torch.save(model)``; its class must be importable
  (``weights_only=False``: trusted files only).
- ``model.onnx``: an existing ONNX model; pruning, fine-tuning and export are skipped.

Built-in workload names (``resnet18``, ...) are named factories of this module's table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.errors import ConfigError, InputError
from trtopt.refs import describe_exception, import_callable, is_import_ref
from trtopt.torch_util import transformer_fastpath_off

#: built-in model name -> factory reference (random weights; the data comes with the workload)
BUILTIN_FACTORIES: dict[str, str] = {
    "resnet18": "trtopt.models.resnet:resnet18",
    "resnet50": "trtopt.models.resnet:resnet50",
    "mobilenet_v2": "trtopt.models.mobilenet:mobilenet_v2",
}


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference.

    Attributes:
        kind: ``factory``, ``module`` (torch.save'd ``.pt``) or ``onnx``.
        value: The import reference or file path.
        weights: State-dict file for a factory, or ``None``.
    """

    kind: str
    value: str
    weights: str | None = None

    @classmethod
    def parse(cls, text: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None) -> ModelRef:
        """Parse a reference (``pkg.mod:fn``, ``*.pt``/``*.pth``, ``*.onnx`` or a built-in name).

        Raises:
            ConfigError: Not one of the forms, or ``weights`` given for a non-factory.
        """
        text = str(text)
        w = None if weights in (None, "") else str(weights)
        if text in BUILTIN_FACTORIES:
            return cls("factory", BUILTIN_FACTORIES[text], w)
        if is_import_ref(text):
            return cls("factory", text, w)
        suffix = Path(text).suffix.lower()
        kind = {".onnx": "onnx", ".pt": "module", ".pth": "module"}.get(suffix)
        if kind is None:
            raise ConfigError(f"model '{text}' is not a factory (package.module:function), a torch.save'd .pt/.pth "
                              "module or an .onnx file")
        if w is not None:
            raise ConfigError(f"weights = '{w}' applies to a factory (package.module:function), not to {text}")
        return cls(kind, text, None)

    @property
    def is_onnx(self) -> bool:
        """Whether the model is already ONNX (no PyTorch stages)."""
        return self.kind == "onnx"

    def __str__(self) -> str:
        return self.value + (f" (weights {self.weights})" if self.weights else "")


def load_model(ref: ModelRef | str, weights: str | os.PathLike[str] | None = None) -> Any:
    """Build the ``torch.nn.Module`` a reference names, in eval mode.

    Args:
        ref: A :class:`ModelRef` or its text.
        weights: State dict for a factory (when ``ref`` is text).

    Returns:
        The module.

    Raises:
        ConfigError: ``ref`` is an ONNX file (no PyTorch model to load).
        InputError: The factory does not import, raises or returns something else than a module; the
            ``.pt`` is missing or its class is not importable; the weights do not fit.
    """
    import torch

    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref, weights)
    if r.kind == "onnx":
        raise ConfigError(f"{r.value} is an ONNX model: PyTorch stages (prune, fine-tune, export) do not apply")
    if r.kind == "module":
        model = _load_saved_module(Path(r.value))
    else:
        factory = import_callable(r.value, "model factory")
        try:
            model = factory()
        except Exception as exc:  # user code: one line naming the factory
            raise InputError(f"model factory '{r.value}' raised {describe_exception(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"model factory '{r.value}' returned a {type(model).__name__}, not a torch.nn.Module")
        if r.weights:
            _load_weights(model, Path(r.weights), r.value)
    return model.eval()


def _load_saved_module(path: Path) -> Any:
    import torch

    if path.is_dir():
        raise InputError(f"model {path} is a directory, not a torch.save'd file")
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise InputError(f"cannot load {path}: {describe_exception(exc)}; the saved module's class must be "
                         "importable: run trtopt from the folder holding its package or add it to PYTHONPATH "
                         "(better: save a state dict and name a factory, package.module:function)") from None
    except Exception as exc:
        raise InputError(f"cannot load {path} as a torch module: {describe_exception(exc)}") from None
    if isinstance(model, dict):
        raise InputError(f"{path} holds a state dict, not a module: name the model's factory "
                         f"(--model package.module:function) and pass this file as its weights")
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_weights(model: Any, path: Path, factory: str) -> None:
    import torch

    if not path.is_file():
        raise InputError(f"weights file {path} is a directory" if path.is_dir() else f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read weights {path} as a state dict (torch.load weights_only=True): "
                         f"{describe_exception(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"weights {path} hold a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"weights {path} do not fit the model from '{factory}': "
                         f"{' '.join(str(exc).split())[:300]}") from None


def check_input_order(model: Any, specs: Sequence[Any], where: str = "--input") -> None:
    """Refuse specs whose names are ``forward``'s parameter names in another order.

    Inputs are passed positionally (ONNX export has no keywords), so ``attention_mask`` declared
    before ``input_ids`` would feed the mask into the ids and still run, giving a wrong model.
    Names that are not all ``forward`` parameters cannot be checked (``*args``, other names).

    Raises:
        InputError: Naming both orders.
    """
    import inspect

    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return
    params = [p.name for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [s.name for s in specs]
    if set(names) <= set(params) and names != params[: len(names)]:
        raise InputError(f"{where}: inputs are declared in the order {names} but forward takes "
                         f"({', '.join(params)}): declare them in forward's order (they are passed by position)")


def check_forward(model: Any, specs: Sequence[Any], ref: str = "model", where: str = "--input") -> tuple[Any, ...]:
    """Run ``model`` once on example inputs built from ``specs`` (OPT shapes, batch 1), as the export will.

    PyTorch's fused Transformer fast path is off for the call (:func:`trtopt.torch_util.transformer_fastpath_off`).

    Args:
        model: The ``torch.nn.Module``.
        specs: One :class:`~trtopt.inputs.InputSpec` per ``forward`` argument, in order.
        ref: The model reference, for messages.
        where: Where the specs came from (``--input``, ``workload.inputs``), for messages.

    Returns:
        The outputs as a tuple of tensors.

    Raises:
        InputError: The specs name ``forward``'s parameters in another order, or the forward fails on
            the declared inputs (names the shapes and the fix).
    """
    import torch

    from trtopt.inputs import example_tensors

    check_input_order(model, specs, where)
    args = example_tensors(specs)
    try:
        with torch.no_grad(), transformer_fastpath_off():  # the computation the ONNX export records
            out = model(*args)
    except Exception as exc:
        shown = ", ".join(str(s) for s in specs)
        hint = _index_hint(model, specs) if isinstance(exc, IndexError) else None
        raise InputError(f"{ref}: forward failed on the declared inputs ({shown}): {describe_exception(exc)}; "
                         + (hint or f"check {where} (order = forward's arguments, dtype, shape)")) from None
    outs = out if isinstance(out, tuple | list) else (out,)
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise InputError(f"{ref}: forward must return a tensor or a tuple of tensors, got {type(out).__name__}")
    return tuple(outs)


def _index_hint(model: Any, specs: Sequence[Any]) -> str | None:
    """The fix for an ``IndexError`` in ``forward``: integer inputs whose value range passes an embedding's size.

    Random integer feeds are drawn from each spec's ``LOW..HIGH`` (half-open); ids at or above an
    ``nn.Embedding``'s ``num_embeddings`` index past its table.
    """
    import torch

    sizes = sorted({m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)})
    ints = [sp for sp in specs if sp.dtype.startswith(("int", "uint"))]
    if not sizes or not ints:
        return None
    ranges = ", ".join(f"'{sp.name}' {_num(sp.low)}..{_num(sp.high)}" if sp.high is not None
                       else f"'{sp.name}' (no range given)" for sp in ints)
    return (f"the integer inputs' value ranges ({ranges}) must stay below the model's embedding size(s) "
            f"{', '.join(map(str, sizes))}: give each id input a range LOW..HIGH with HIGH <= its embedding's "
            f"num_embeddings (e.g. {ints[0].name}:{ints[0].dtype}:DIMS:0..{sizes[0]})")


def _num(v: float | None) -> str:
    return "?" if v is None else (str(int(v)) if float(v).is_integer() else str(v))
