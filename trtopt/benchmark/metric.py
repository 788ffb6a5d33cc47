"""Task metrics: the built-in ``top1`` / ``top5`` and a user's function given by reference.

A task metric scores a variant's outputs against the labels of the evaluation data. Built-in
names (``top1``, ``top5`` and any name added with :func:`trtopt.benchmark.register_metric`) take
the primary output only. A user's metric is given as an import reference ``package.module:function``
(``[bench] metric = "myproj.metrics:exact_match"`` or ``trtopt bench --metric myproj.metrics:exact_match``)
and follows this contract::

    def exact_match(outputs: dict[str, np.ndarray], labels: np.ndarray) -> float: ...

- ``outputs``: every model output by its output name, over the whole evaluation set (samples on
  axis 0, in the order of the data file);
- ``labels``: the ``labels`` array of the data file, unchanged (any dtype and shape with one entry
  per sample on axis 0: class ids, padded character ids, boxes...);
- returns one finite number. Higher is better unless the function has the attribute
  ``higher_is_better = False`` (an error rate, a loss). The report shows it by the function's
  name (or its ``metric_name`` attribute), and the gate applies the accuracy budget to it in its own
  units (a drop for higher-is-better metrics, a rise otherwise).

A metric that raises, or returns something that is not a finite number, is a user error: one line
naming the metric and the problem, exit 2, and no report is written.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtopt.errors import ConfigError, MetricError
from trtopt.refs import describe_exception, import_callable, is_import_ref

__all__ = ["Metric", "check_metric_name", "resolve_metric"]


@dataclass(frozen=True)
class Metric:
    """A resolved task metric.

    Attributes:
        name: Name shown in reports (``top1``, or the user function's name).
        fn: The function: ``fn(primary_output, labels)`` for built-ins, ``fn(outputs, labels)`` by reference.
        ref: The import reference (``None`` for built-ins).
        higher_is_better: Direction of the metric (the gate judges drops, or rises when ``False``).
    """

    name: str
    fn: Callable[..., Any]
    ref: str | None = None
    higher_is_better: bool = True

    @property
    def builtin(self) -> bool:
        """Whether the metric is a built-in one taking the primary output only."""
        return self.ref is None

    def compute(self, outputs: Mapping[str, np.ndarray], primary: str, labels: np.ndarray) -> float:
        """Score ``outputs`` against ``labels``.

        Args:
            outputs: Output name -> array over the whole evaluation set.
            primary: The primary output's name (what built-in metrics score).
            labels: The data file's labels.

        Returns:
            The metric value (percent for the built-in accuracies).

        Raises:
            InputError: The metric does not apply, raised, or returned a non-number (one line naming it).
        """
        if self.builtin:
            return float(self.fn(outputs[primary], labels))
        try:
            value = self.fn(dict(outputs), labels)
        except Exception as exc:  # user code: one line, never a traceback
            raise MetricError(f"metric '{self.ref}' raised {describe_exception(exc)}") from None
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise MetricError(f"metric '{self.ref}' returned {type(value).__name__} {_short(value)}, not a number "
                             "(a metric returns one float)")
        if not math.isfinite(float(value)):
            raise MetricError(f"metric '{self.ref}' returned {float(value)}, not a finite number")
        return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_metric_name(metric: str, known: list[str], where: str = "metric") -> None:
    """Check the form of a metric setting without importing anything.

    Raises:
        ConfigError: Neither a registered name nor a ``package.module:function`` reference.
    """
    if not isinstance(metric, str) or not (metric in known or is_import_ref(metric)):
        raise ConfigError(f"unknown metric '{metric}' ({where}): use a built-in one ({', '.join(known)}) or your "
                          "own function as package.module:function")


def resolve_metric(metric: str | Callable[..., Any] | Metric, registry: Mapping[str, Callable[..., Any]]) -> Metric:
    """Resolve a metric name, reference or callable.

    Args:
        metric: A registered name (``top1``), ``package.module:function`` (imported with
            :func:`trtopt.refs.import_callable`), a :class:`Metric`, or a callable taking
            ``(primary_output, labels)`` (the Python API's older form).
        registry: Built-in name -> ``fn(primary_output, labels)``.

    Raises:
        ConfigError: An unknown name.
        InputError: A reference that does not import or is not callable.
    """
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return Metric(getattr(metric, "__name__", "custom"), metric,
                      higher_is_better=bool(getattr(metric, "higher_is_better", True)))
    if metric in registry:
        return Metric(metric, registry[metric])
    if not is_import_ref(metric):
        raise ConfigError(f"unknown metric '{metric}' (built-in: {', '.join(sorted(registry))}; or give your own "
                          "as package.module:function)")
    fn = import_callable(metric, what="metric")
    name = str(getattr(fn, "metric_name", None) or getattr(fn, "__name__", None) or metric.split(":")[1])
    return Metric(name, fn, ref=metric, higher_is_better=bool(getattr(fn, "higher_is_better", True)))
