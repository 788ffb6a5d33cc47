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
from typing import Any

from trtopt.errors import ConfigError, InputError

#: variant name -> (2:4 sparse, precision, FP16 for the non-INT8 rest)
VARIANTS: dict[str, tuple[bool, str, bool]] = {
    "fp32": (False, "fp32", False),
    "fp16": (False, "fp16", False),
    "int8": (False, "int8", False),
    "int8-fp16": (False, "int8", True),
    "sparse24-fp32": (True, "fp32", False),
    "sparse24-fp16": (True, "fp16", False),
    "sparse24-int8": (True, "int8", False),
    "sparse24-int8-fp16": (True, "int8", True),
}
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
        return any(VARIANTS[v][0] for v in self.variants)


def _section_classes() -> dict[str, type]:
    # Imported here: recipe parsing is the only caller, and stages import torch lazily.
    from trtopt.benchmark import BenchConfig
    from trtopt.calib import CalibrationConfig
    from trtopt.export import ExportConfig
    from trtopt.models.workloads import WorkloadConfig
    from trtopt.quant import FP16Config, QuantizeConfig
    from trtopt.sparsity import FinetuneConfig, PruneConfig

    return {
        "recipe": RunConfig, "workload": WorkloadConfig, "prune": PruneConfig, "finetune": FinetuneConfig,
        "export": ExportConfig, "calibrate": CalibrationConfig, "quantize": QuantizeConfig,
        "fp16": FP16Config, "bench": BenchConfig,
    }


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: one config object per stage (``finetune`` is ``None`` when absent)."""

    run: RunConfig
    workload: Any
    prune: Any
    finetune: Any
    export: Any
    calibrate: Any
    quantize: Any
    fp16: Any
    bench: Any
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


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Build a :class:`Recipe` from parsed TOML.

    Args:
        data: Top-level TOML tables.
        source: Where the data came from, for error messages.

    Returns:
        The recipe.

    Raises:
        ConfigError: Unknown table or key, or an invalid value.
    """
    classes = _section_classes()
    unknown = sorted(set(data) - set(classes))
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)} in {source} (known: {', '.join(classes)})")
    built = {name: _build(cls, data.get(name, {}), name, source) for name, cls in classes.items()}
    built["run"] = built.pop("recipe")
    if "finetune" not in data:
        built["finetune"] = None
    return Recipe(source=source, **built)


def load_recipe(path: str | os.PathLike[str], overrides: dict[str, dict[str, Any]] | None = None) -> Recipe:
    """Read and validate a TOML recipe.

    Args:
        path: The ``.toml`` file.
        overrides: Per-table key overrides applied on top of the file (e.g. from the CLI).

    Returns:
        The recipe.

    Raises:
        InputError: Missing or unparsable file.
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
    return recipe_from_dict(data, source=p.name)
