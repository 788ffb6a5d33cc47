"""The PyTorch model options shared by ``trtopt export`` and ``trtopt prune``.

``--model REF`` (``package.module:function`` | built-in name | ``torch.save``'d ``.pt``), ``--weights``
(a state dict for a factory), ``--input NAME:DTYPE:SHAPE[:LOW..HIGH]`` once per ``forward`` argument,
plus the older ``--module MODEL.pt`` (= ``--model`` for a ``.pt``), ``--input-shape N,C,H,W`` (one
float32 input) and ``--workload NAME``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtopt.errors import ConfigError, InputError

if TYPE_CHECKING:
    from trtopt.backends.torch_runner import TorchModel

#: --input help: the spec syntax, not only N,C,H,W
INPUT_HELP = ("model input, once per forward() argument in order: NAME:DTYPE:SHAPE[:LOW..HIGH]; DTYPE float32, "
              "float16, int64, int32 or bool; SHAPE x-separated dims: 128 (fixed), batch (dynamic axis 0, "
              "1..32), batch=1..8..32 (min..opt..max), seq=16..128; LOW..HIGH = value range of random "
              "feeds (token ids below the vocabulary size). E.g. --input input_ids:int64:batchx16:0..50 "
              "--input attention_mask:int64:batchx16 or --input image:float32:batchx3x224x224")


def add_model_args(p: argparse.ArgumentParser, workloads: str) -> None:
    """Add ``--model/--module/--workload``, ``--weights``, ``--input`` and ``--input-shape``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="REF",
                     help="your model: package.module:function (a factory returning a torch.nn.Module; run from "
                          "the folder holding the package), a built-in name, or a torch.save'd MODEL.pt")
    src.add_argument("--module", metavar="MODEL.pt",
                     help="a module saved with torch.save(model) (same as --model MODEL.pt; trusted files only)")
    src.add_argument("--workload", help=f"built-in workload with its data: {workloads}")
    p.add_argument("--weights", type=Path, default=None, metavar="W.pt",
                   help="state dict for a --model factory (torch.load(weights_only=True))")
    p.add_argument("--input", action="append", default=[], metavar="SPEC", dest="inputs", help=INPUT_HELP)
    p.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="one float32 input of this shape (older form of --input; axis 0 becomes the dynamic "
                        "batch); token-id or multi-input models need --input with a dtype")


@dataclass
class Source:
    """A loaded PyTorch model and its declared inputs.

    Attributes:
        model: The module (eval mode).
        specs: Input specs (empty when none were given).
        ref: The reference text, for messages.
        workload: The built-in workload object (its data), or ``None``.
    """

    model: Any
    specs: tuple[Any, ...]
    ref: str
    workload: Any = None


def source_files(args: argparse.Namespace) -> list[str]:
    """The files ``--model/--module/--weights`` read (a factory reference names none): outputs must differ."""
    return [str(p) for p in (getattr(args, "model", None), getattr(args, "module", None),
                             getattr(args, "weights", None)) if p]


def shape_spec(text: str, dynamic_batch: bool = True) -> Any:
    """``--input-shape 1,3,32,32`` -> the spec ``input:float32:batch=1..1..32x3x32x32``."""
    from trtopt.cli.args import parse_int_list
    from trtopt.inputs import Dim, InputSpec

    dims = parse_int_list(text, "--input-shape")
    first = Dim(1, dims[0], max(32, dims[0]), "batch") if dynamic_batch and dims else None
    rest = tuple(Dim(d, d, d) for d in dims[1:])
    return InputSpec("input", "float32", ((first,) if first else (Dim(dims[0], dims[0], dims[0]),)) + rest)


def load_source(args: argparse.Namespace, what: str, dynamic_batch: bool = True) -> Source:
    """Load the model named by ``--model/--module/--workload`` and check it runs on the declared inputs.

    Raises:
        ConfigError: ``--input`` and ``--input-shape`` together, or a bad spec.
        InputError: An ``.onnx`` reference (nothing to do), the factory or module does not load, or the
            forward fails on the declared inputs (with a hint to use ``--input`` with a dtype for token models).
    """
    from trtopt.inputs import parse_input_specs

    if args.inputs and args.input_shape:
        raise ConfigError("give either --input (one per model input) or --input-shape, not both")
    if args.workload:
        if args.weights or args.inputs:
            raise ConfigError("--weights and --input apply to --model/--module, not to a built-in --workload")
        from trtopt.models.load import load_workload
        from trtopt.models.workload import WorkloadConfig

        w = load_workload(WorkloadConfig(model=args.workload))
        return Source(w.model, (), args.workload, w)
    from trtopt.models.reference import ModelRef, check_forward, load_model

    text = args.model or args.module
    if args.module and not str(args.module).lower().endswith((".pt", ".pth")):
        raise ConfigError(f"--module takes a torch.save'd .pt/.pth file, got '{args.module}' (use --model)")
    ref = ModelRef.parse(text, args.weights)
    if ref.is_onnx:
        raise InputError(f"{text} is already an ONNX model: nothing to {what} (trtopt {what} takes a PyTorch model; "
                         "go on with calibrate/quantize on the .onnx)")
    model = load_model(ref)
    specs = parse_input_specs(args.inputs) if args.inputs else \
        ((shape_spec(args.input_shape, dynamic_batch),) if args.input_shape else ())
    if specs:
        try:
            check_forward(model, specs, ref=str(text))
        except InputError as exc:
            if args.input_shape and _takes_token_ids(model):
                raise InputError(f"{text}: --input-shape feeds one float32 input, but the model starts with an "
                                 "embedding (token ids): use --input NAME:int64:SHAPE per input, e.g. --input "
                                 "ids:int64:batchx16 --input mask:int64:batchx16") from None
            raise exc from None
    return Source(model, specs, str(text))


def _takes_token_ids(model: Any) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag) for m in model.modules())


def load_torch_workload(name: str) -> TorchModel:
    """``trtopt bench --backend torch NAME``: a built-in workload as the torch runner's ``loader`` returns it.

    Returns:
        A :class:`~trtopt.backends.torch_runner.TorchModel` (module, input name, input shape).

    Raises:
        InputError: ``name`` is no built-in workload (the message lists them).
    """
    from trtopt.backends.torch_runner import TorchModel
    from trtopt.models.builtin import WORKLOADS
    from trtopt.models.load import load_workload
    from trtopt.models.workload import WorkloadConfig

    if name not in WORKLOADS:
        raise InputError(f"unknown torch model '{name}': not a workload ({', '.join(sorted(WORKLOADS))}) "
                         "nor a .pt file")
    wl = load_workload(WorkloadConfig(model=name))
    return TorchModel(wl.model, wl.input_name, (None, *wl.example.shape[1:]))
