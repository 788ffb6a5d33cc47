"""TOML recipes: one file describes a whole pipeline run (workload -> variants -> report).

Each TOML table maps onto one stage's config dataclass; unknown tables or keys are
rejected with the list of known ones, so a typo never silently falls back to a default.

Example (``bench/recipes/digits_demo.toml``)::

    [recipe]
    name = "digits-demo"
    variants = ["fp32", "fp16", "int8", "sparse24-fp32", "sparse24-int8"]

    [workload]
    model = "digits_cnn"

    [calibrate]
    method = "auto"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtopt.errors import ConfigError, InputError

if TYPE_CHECKING:  # the stage configs are imported when a recipe is parsed (_section_classes), not here
    from trtopt.benchmark import BenchConfig
    from trtopt.calib import CalibrationConfig
    from trtopt.export import ExportConfig
    from trtopt.models.workload import WorkloadConfig
    from trtopt.pruning import LowRankConfig, ScheduleConfig, StructuredConfig
    from trtopt.quant import FP16Config, QuantizeConfig
    from trtopt.sparsity import FinetuneConfig, PruneConfig


@dataclass(frozen=True)
class Variant:
    """One model a recipe can build and benchmark.

    Attributes:
        name: The recipe's name for it (``int8-fp16``, ``sparse24-fp32``, ...).
        sparse: Made from the 2:4-pruned model (else the dense one).
        precision: ``fp32``, ``fp16`` or ``int8``.
        fp16_rest: INT8 with FP16 for everything not in INT8.
        shrink: ``structured`` (fewer channels, ``[structured]``) or ``lowrank`` (SVD factors, ``[lowrank]``):
            made from the densely pruned model, iterated and fine-tuned as ``[schedule]`` says.
    """

    name: str
    sparse: bool
    precision: str
    fp16_rest: bool = False
    shrink: str = ""

    @property
    def kind(self) -> str:
        """Which FP32 model it is made from: ``sparse``, ``pruned`` (structured), ``lowrank`` or ``dense``."""
        return "sparse" if self.sparse else {"structured": "pruned", "lowrank": "lowrank"}.get(self.shrink, "dense")

    @property
    def sparsity(self) -> str:
        """The report's sparsity column: ``2:4``, ``structured``, ``low-rank`` or ``dense``."""
        return "2:4" if self.sparse else {"structured": "structured", "lowrank": "low-rank"}.get(self.shrink, "dense")


#: variant name -> :class:`Variant`
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fp32", False, "fp32"),
    Variant("fp16", False, "fp16"),
    Variant("int8", False, "int8"),
    Variant("int8-fp16", False, "int8", fp16_rest=True),
    Variant("sparse24-fp32", True, "fp32"),
    Variant("sparse24-fp16", True, "fp16"),
    Variant("sparse24-int8", True, "int8"),
    Variant("sparse24-int8-fp16", True, "int8", fp16_rest=True),
    Variant("pruned-fp32", False, "fp32", shrink="structured"),
    Variant("pruned-int8", False, "int8", shrink="structured"),
    Variant("lowrank-fp32", False, "fp32", shrink="lowrank"),
)}
BACKENDS = ("onnxruntime", "tensorrt", "tensorrt-rtx", "torch")


@dataclass(frozen=True)
class RunConfig:
    """The ``[recipe]`` table.

    Attributes:
        name: Recipe name (report title, default output folder name).
        variants: Variants to build and benchmark (see :data:`VARIANTS`); ``fp32`` is the baseline
            and is always included.
        backend: Runtime to benchmark on: ``onnxruntime`` (CPU default), ``tensorrt``,
            ``tensorrt-rtx`` (TensorRT for RTX: builds without a GPU, runs on an RTX GPU) or ``torch``.
        out: Output folder; default ``runs/<name>`` (relative to the working folder; ignored by git).
    """

    name: str = "recipe"
    variants: tuple[str, ...] = ("fp32", "fp16", "int8", "sparse24-fp32", "sparse24-int8")
    backend: str = "onnxruntime"
    out: str | None = None

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ConfigError(f"unknown variant(s) {bad} in [recipe] (known: {', '.join(VARIANTS)})")
        variants = tuple(dict.fromkeys(("fp32", *self.variants)))
        object.__setattr__(self, "variants", variants)
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{self.backend}' in [recipe] (choose from {', '.join(BACKENDS)})")

    @property
    def needs_sparse(self) -> bool:
        """Whether any variant is 2:4 sparse."""
        return any(VARIANTS[v].sparse for v in self.variants)

    @property
    def shrinks(self) -> tuple[str, ...]:
        """The dense pruning methods the variants need (``structured``, ``lowrank``), in variant order."""
        return tuple(dict.fromkeys(VARIANTS[v].shrink for v in self.variants if VARIANTS[v].shrink))


def _section_classes() -> dict[str, type]:
    # Imported here: recipe parsing is the only caller, and stages import torch lazily.
    from trtopt.benchmark import BenchConfig
    from trtopt.calib import CalibrationConfig
    from trtopt.export import ExportConfig
    from trtopt.models.workload import WorkloadConfig
    from trtopt.pruning import LowRankConfig, ScheduleConfig, StructuredConfig
    from trtopt.quant import FP16Config, QuantizeConfig
    from trtopt.sparsity import FinetuneConfig, PruneConfig

    return {
        "recipe": RunConfig, "workload": WorkloadConfig, "prune": PruneConfig, "finetune": FinetuneConfig,
        "structured": StructuredConfig, "lowrank": LowRankConfig, "schedule": ScheduleConfig,
        "export": ExportConfig, "calibrate": CalibrationConfig, "quantize": QuantizeConfig,
        "fp16": FP16Config, "bench": BenchConfig,
    }


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: one config object per stage (``finetune`` is ``None`` when absent).

    ``prune`` / ``finetune`` make the 2:4 variants; ``structured`` / ``lowrank`` with ``schedule`` the
    ``pruned-*`` / ``lowrank-*`` ones.
    """

    run: RunConfig
    workload: WorkloadConfig
    prune: PruneConfig
    finetune: FinetuneConfig | None
    structured: StructuredConfig
    lowrank: LowRankConfig
    schedule: ScheduleConfig
    export: ExportConfig
    calibrate: CalibrationConfig
    quantize: QuantizeConfig
    fp16: FP16Config
    bench: BenchConfig
    source: str = "<dict>"


def _build(cls: type, table: dict[str, Any], section: str, source: str):
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] in {source} must be a table")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [{section}] of {source} (known: {', '.join(sorted(known))})"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{section}] of {source}: {exc}") from None


#: ``[workload]`` keys holding file paths (resolved against the recipe's folder)
_PATH_KEYS = ("weights", "calib_data", "eval_data", "train_data")


def _resolve_paths(table: Any, base_dir: Path) -> Any:
    """``[workload]`` with relative file paths made relative to ``base_dir`` (the recipe's folder, not the CWD).

    ``model`` is a path only when it names a ``.pt``/``.pth``/``.onnx`` file (not a factory or built-in name).
    """
    if not isinstance(table, dict):
        return table
    out = dict(table)
    keys = [k for k in _PATH_KEYS if isinstance(out.get(k), str) and out[k]]
    model = out.get("model")
    if isinstance(model, str) and Path(model).suffix.lower() in (".pt", ".pth", ".onnx") and ":" not in model:
        keys.append("model")
    for k in keys:
        p = Path(out[k]).expanduser()
        out[k] = str(p if p.is_absolute() else base_dir / p)
    return out


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>",
                     base_dir: str | os.PathLike[str] | None = None) -> Recipe:
    """Build a :class:`Recipe` from parsed TOML (or a plain dict, from Python).

    Args:
        data: Top-level TOML tables.
        source: Where the data came from, for error messages.
        base_dir: Folder that relative ``[workload]`` file paths (``model`` files, ``weights``,
            ``*_data``) are relative to; ``None``: the current folder.

    Returns:
        The recipe.

    Raises:
        ConfigError: Unknown table or key, or an invalid value (a user's PyTorch model without
            ``inputs``, ``[finetune]`` for a user's PyTorch model without ``train_data``).
        InputError: A model, weights or data file named in ``[workload]`` does not exist.
    """
    classes = _section_classes()
    unknown = sorted(set(data) - set(classes))
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)} in {source} (known: {', '.join(classes)})")
    if base_dir is not None and "workload" in data:
        data = {**data, "workload": _resolve_paths(data["workload"], Path(base_dir))}
    from trtopt.models.load import validate_workload

    built = {}
    for name, cls in classes.items():
        built[name] = _build(cls, data.get(name, {}), name, source)
        if name == "workload":
            validate_workload(built[name])  # a user's model reference, specs and files, before the other tables
    built["run"] = built.pop("recipe")
    if "finetune" not in data:
        built["finetune"] = None
    wl = built["workload"]
    if (built["finetune"] is not None and not wl.is_builtin and not wl.train_data and built["finetune"].data is None
            and not str(wl.model).lower().endswith(".onnx")):
        raise ConfigError(f"[finetune] in {source} needs workload.train_data (an .npz with the training inputs and "
                          "labels) or finetune.data (a dataloader factory package.module:function) for your own model")
    if built["run"].backend == "torch" and str(wl.model).lower().endswith(".onnx"):
        raise ConfigError(f"backend 'torch' in {source} needs a PyTorch model; {wl.model} is ONNX (use onnxruntime, "
                          "tensorrt or tensorrt-rtx)")
    return Recipe(source=source, **built)


def load_recipe(path: str | os.PathLike[str], overrides: dict[str, dict[str, Any]] | None = None) -> Recipe:
    """Read and validate a TOML recipe.

    Args:
        path: The ``.toml`` file.
        overrides: Per-table key overrides applied on top of the file (e.g. from the CLI).

    Returns:
        The recipe.

    Relative file paths in ``[workload]`` are relative to the recipe's folder.

    Raises:
        InputError: Missing or unparsable file; a file named in ``[workload]`` is missing.
        ConfigError: Unknown table/key or invalid value.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"recipe not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p} is not valid TOML: {exc}") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return recipe_from_dict(data, source=p.name, base_dir=p.resolve().parent)
