"""trtopt: 2:4 sparsity, entropy calibration, Q/DQ INT8 / FP16 and TensorRT 10/11 engines.

Importing this package is cheap: it imports neither TensorRT nor torch and touches no
CUDA device. Stage APIs live in their subpackages (``trtopt.sparsity``, ``trtopt.calib``,
``trtopt.quant``, ``trtopt.backends``, ``trtopt.benchmark``, ``trtopt.pipeline``).

The recipe API is exported here, lazily (``docs/your-model.md``)::

    import trtopt
    recipe = trtopt.recipe_from_dict({"workload": {"model": "mypkg.models:make", "inputs": [...]}})
    result = trtopt.Pipeline(recipe, "runs/mine").run()
    result = trtopt.run_recipe("my_recipe.toml")
"""

from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access: ``import trtopt`` stays light)
_LAZY = {
    "Pipeline": "trtopt.pipeline",
    "PipelineResult": "trtopt.pipeline",
    "run_recipe": "trtopt.pipeline",
    "Recipe": "trtopt.recipe",
    "recipe_from_dict": "trtopt.recipe",
    "load_recipe": "trtopt.recipe",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trtopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
