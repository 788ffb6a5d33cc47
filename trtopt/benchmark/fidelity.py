"""The benchmark's name for the generic fidelity metrics and tolerances (:mod:`trtopt.judge.generic` owns them)."""

from trtopt.judge.generic import (
    DEFAULT_TOLERANCE,
    MAX_AUTO_CHANNELS,
    ChannelSplit,
    Tolerance,
    check_tolerance_names,
    fidelity,
    tolerance_for,
    with_regression_outputs,
)

__all__ = ["DEFAULT_TOLERANCE", "MAX_AUTO_CHANNELS", "ChannelSplit", "Tolerance", "check_tolerance_names", "fidelity",
           "tolerance_for", "with_regression_outputs"]
