"""Which workload a config names, checked and built: the dispatch between built-in and user models."""

from __future__ import annotations

from trtopt.models.builtin import WORKLOADS
from trtopt.models.user import load_user_workload, validate_config
from trtopt.models.workload import Workload, WorkloadConfig


def validate_workload(cfg: WorkloadConfig) -> None:
    """Cheap checks of a ``[workload]`` before any stage runs (no torch import).

    A built-in workload is checked by its config; a user's model reference, input specs and files
    by :func:`trtopt.models.user.validate_config`.

    Raises:
        ConfigError: Not a model reference, bad spec syntax, ``inputs`` missing for a PyTorch model.
        InputError: A named model, weights or data file is missing or is a folder.
    """
    if not cfg.is_builtin:
        validate_config(cfg)


def load_workload(cfg: WorkloadConfig) -> Workload:
    """Create the workload named by ``cfg.model``.

    Args:
        cfg: Workload options.

    Returns:
        The workload (the digits model is trained on the way).

    Raises:
        InputError: The user's model does not import or load, its forward fails on the declared
            inputs, the specs contradict an ``.onnx`` model, or a data file is missing or does not
            match the specs (all checked here, before any stage writes a file).
    """
    if not cfg.is_builtin:
        return load_user_workload(cfg)
    return WORKLOADS[cfg.model](cfg)
