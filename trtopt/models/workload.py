"""Workloads: a model plus the data and metric a recipe benchmarks it on (the two dataclasses).

A workload yields an FP32 PyTorch model, example inputs for export, calibration inputs and
evaluation inputs (with labels when the task has them). ``digits_cnn`` is trained here in
seconds on real data; the vision architectures use random weights and are throughput-only,
which reports state explicitly. Any other ``model`` is the user's own (``pkg.mod:fn``, a
``torch.save``'d ``.pt`` or an ``.onnx``), built by :mod:`trtopt.models.user` from input
specs and ``.npz`` data (``docs/your-model.md``). The built-in factories live in
:mod:`trtopt.models.builtin`, the user's in :mod:`trtopt.models.user`; :func:`trtopt.models.load.load_workload`
picks one and :func:`trtopt.models.load.validate_workload` checks a config before any stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trtopt.errors import ConfigError

#: names of the built-in workloads (their factories: :data:`trtopt.models.builtin.WORKLOADS`)
BUILTIN_WORKLOADS = ("digits_cnn", "resnet18", "resnet50", "mobilenet_v2", "minilm")


@dataclass(frozen=True)
class WorkloadConfig:
    """The ``[workload]`` table of a recipe.

    Attributes:
        model: Built-in workload name (see :data:`BUILTIN_WORKLOADS`) or the user's model: ``pkg.mod:fn``
            (a factory returning a ``torch.nn.Module``), ``model.pt`` (``torch.save``'d module) or
            ``model.onnx`` (:class:`~trtopt.models.reference.ModelRef`).
        seed: Seed for data split, weights and training.
        train_epochs: Training epochs (digits only).
        width: First-conv width (digits only).
        image_size: Input resolution (vision architectures).
        num_calib: Calibration samples.
        num_eval: Evaluation samples (random-input and text workloads).
        seq_len: Tokens per sentence (text workloads; padded/truncated to this length).
        weights: State dict (``torch.load(weights_only=True)``) for a factory ``model``.
        inputs: One input spec per model input (``name:dtype:DIMS[:LOW..HIGH]``, see
            :mod:`trtopt.inputs`), in ``forward`` order; required for a user's PyTorch model,
            optional for ``.onnx`` (default: read from the graph).
        output_names: Graph output names for the export (default ``output`` / ``output_0..``).
        calib_data: Calibration ``.npz`` (``docs/data-format.md``); default: random inputs from the specs.
        eval_data: Evaluation ``.npz`` (its ``labels`` feed the task metric); default: random inputs.
        train_data: Training ``.npz`` with ``labels`` for ``[finetune]``; default: no fine-tuning.

    Paths in a recipe file are relative to the recipe's folder (:func:`trtopt.recipe.load_recipe`).
    Construction checks the values themselves; :func:`trtopt.models.load.validate_workload` checks a
    user's model reference, specs and files.
    """

    model: str = "digits_cnn"
    seed: int = 0
    train_epochs: int = 40
    width: int = 16
    image_size: int = 224
    num_calib: int = 256
    num_eval: int = 64
    seq_len: int = 64
    weights: str | None = None
    inputs: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    calib_data: str | None = None
    eval_data: str | None = None
    train_data: str | None = None

    def __post_init__(self) -> None:
        for k in ("train_epochs", "width", "image_size", "num_calib", "num_eval", "seq_len"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"workload.{k} must be positive, got {getattr(self, k)}")
        for k in ("inputs", "output_names"):
            v = getattr(self, k)
            v = (v,) if isinstance(v, str) else tuple(v)
            if not all(isinstance(x, str) for x in v):
                raise ConfigError(f"workload.{k} must be a list of strings, got {v!r}")
            object.__setattr__(self, k, v)
        if self.is_builtin:
            extra = [k for k in ("weights", "inputs", "output_names", "calib_data", "eval_data", "train_data")
                     if getattr(self, k)]
            if extra:
                raise ConfigError(f"workload.{', workload.'.join(extra)} apply to your own model, not to the built-in "
                                  f"workload '{self.model}'")

    @property
    def is_builtin(self) -> bool:
        """Whether ``model`` names a built-in workload (model + data come with trtopt)."""
        return self.model in BUILTIN_WORKLOADS


@dataclass
class Workload:
    """A concrete workload.

    Attributes:
        name: Workload name.
        model: The FP32 ``torch.nn.Module`` (eval mode).
        input_name: Graph input name for single-input workloads (multi-input ones hold dicts
            keyed by input name in ``example``/``calib``/``eval_x``; export order is dict order).
        output_name: Graph output name.
        example: One example batch (numpy) for export.
        calib: Calibration inputs (numpy, samples on axis 0).
        eval_x: Evaluation inputs.
        eval_y: Evaluation labels, or ``None`` (throughput + fidelity only).
        train_x: Training inputs for masked fine-tuning, or ``None``.
        train_y: Training labels, or ``None``.
        description: One line for reports (data source, weights provenance).
        extra: More keys for the report's ``workload`` block.
        specs: Input specs (:class:`~trtopt.inputs.InputSpec`) of a user's model, or ``None`` (built-in:
            export from :attr:`example`, batch axis dynamic only).
        output_names: Graph output names of a multi-output user model (``()``: :attr:`output_name`).
        onnx_path: The user's ``.onnx`` model (``model`` is then ``None``: no PyTorch stages).
    """

    name: str
    model: object
    input_name: str
    output_name: str
    example: np.ndarray | dict[str, np.ndarray]
    calib: np.ndarray | dict[str, np.ndarray]
    eval_x: np.ndarray | dict[str, np.ndarray]
    eval_y: np.ndarray | None
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)
    specs: tuple | None = None
    output_names: tuple[str, ...] = ()
    onnx_path: Path | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        """Graph output names (``output_names``, or the single :attr:`output_name`)."""
        return self.output_names or (self.output_name,)

    def as_feeds(self, data: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return ``data`` as input name -> array (single-input workloads hold a bare array).

        Args:
            data: One of :attr:`example`, :attr:`calib`, :attr:`eval_x`.

        Returns:
            A feed dict.
        """
        return dict(data) if isinstance(data, dict) else {self.input_name: data}

    @staticmethod
    def count(data: np.ndarray | dict[str, np.ndarray]) -> int:
        """Number of samples (axis 0) in an array or feed dict."""
        return len(next(iter(data.values()))) if isinstance(data, dict) else len(data)

    def take(self, data: np.ndarray | dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
        """Select samples ``idx`` of every input, as a feed dict."""
        return {k: v[idx] for k, v in self.as_feeds(data).items()}

    def info(self) -> dict:
        """Return the report's ``workload`` block."""
        feeds = self.as_feeds(self.example)
        inputs = {k: {"shape": [None, *v.shape[1:]], "dtype": str(v.dtype)} for k, v in feeds.items()}
        return {
            "name": self.name,
            "description": self.description,
            "inputs": inputs,
            "num_calib": self.count(self.calib),
            "num_eval": self.count(self.eval_x),
            "labels": self.eval_y is not None,
            **self.extra,
        }
