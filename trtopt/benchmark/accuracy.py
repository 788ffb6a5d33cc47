"""Accuracy against labels and fidelity against the FP32 outputs.

The task metric (top-1 by default; pluggable via :func:`register_metric`, or a user's function
given as ``package.module:function``, see :mod:`trtopt.benchmark.metric`) needs labels.
Fidelity metrics compare a variant's outputs to FP32's and need no labels, so they are
always available: top-1 agreement (per sample for ``(N, C)``, per position for sequence
outputs ``(N, T, C)``), cosine similarity over the whole tensor and of the worst channel
(a whole-tensor cosine is blind to a small-scale channel, e.g. 0-1 scores next to pixel
coordinates), max/mean absolute error, SQNR (signal-to-quantization-noise ratio,
``10*log10(sum(ref^2) / sum((ref-out)^2))`` in dB; infinite when the outputs are identical)
and the count of non-finite values. Every comparison is checked against a tolerance,
:data:`DEFAULT_TOLERANCE` unless the caller gives one, so a broken variant is never ``ok``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.benchmark.metric import Metric, resolve_metric
from trtopt.errors import ConfigError, InputError
from trtopt.judge.generic import (
    DEFAULT_TOLERANCE,
    ChannelSplit,
    Tolerance,
    check_tolerance_names,
    fidelity,
    tolerance_for,
)
from trtopt.judge.verdict import judge_output

__all__ = ["DEFAULT_TOLERANCE", "AccuracyResult", "ChannelSplit", "Metric", "Tolerance", "evaluate", "fidelity",
           "known_metrics", "register_metric", "run_batched", "topk_accuracy"]

#: metric(outputs, labels) -> value (percent for accuracies)
MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _check_classifier(outputs: np.ndarray, k: int, name: str) -> None:
    k = max(k, 2)  # a top-k over a single column is always right: not a classifier output
    if outputs.ndim != 2 or outputs.shape[1] < k:
        raise InputError(f"metric '{name}' does not apply: it needs (N, classes>={k}) scores, "
                         f"the model output has shape {tuple(outputs.shape)}")


def topk_accuracy(outputs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Return top-k accuracy in percent.

    Args:
        outputs: ``(N, C)`` scores or logits.
        labels: ``(N,)`` integer class labels.
        k: How many top classes count as a hit.
    """
    _check_classifier(outputs, k, f"top{k}")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != outputs.shape[0]:
        raise InputError(f"{labels.shape[0]} labels for {outputs.shape[0]} outputs")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise InputError(f"top{k} needs integer class labels, got {labels.dtype} values like {labels[:3].tolist()}")
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= outputs.shape[1]):
        raise InputError(f"labels range {int(labels.min())}..{int(labels.max())} does not fit the model's "
                         f"{outputs.shape[1]} output classes: top{k} does not apply")
    top = np.argpartition(-outputs, k - 1, axis=1)[:, :k] if k > 1 else outputs.argmax(1)[:, None]
    return float(100.0 * np.mean((top == labels[:, None]).any(axis=1)))


_METRICS: dict[str, MetricFn] = {"top1": lambda o, y: topk_accuracy(o, y, 1),
                                 "top5": lambda o, y: topk_accuracy(o, y, 5)}


def register_metric(name: str, fn: MetricFn) -> None:
    """Register a task metric usable by name in :func:`evaluate` and ``[bench] metric``.

    Args:
        name: Metric name stored in reports.
        fn: ``fn(outputs, labels) -> float``; raise :class:`InputError` when it does not apply.
    """
    _METRICS[name] = fn


def known_metrics() -> list[str]:
    """Return the registered metric names."""
    return sorted(_METRICS)


def get_metric(metric: str | MetricFn | Metric) -> Metric:
    """Resolve a metric name, ``package.module:function`` reference or callable (see :mod:`trtopt.benchmark.metric`).

    Raises:
        ConfigError: Unknown name. InputError: A reference that does not import.
    """
    return resolve_metric(metric, _METRICS)


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy and fidelity of one variant.

    Attributes:
        metric: Task metric name (``top1``), or ``"none"`` without labels.
        value: Metric value (percent for accuracies) or ``None`` without labels.
        top5: Top-5 accuracy (percent) for classifiers with at least 5 classes and labels.
        fidelity: Output name to fidelity metrics against FP32 (empty without a reference).
        outputs: The primary output over the whole evaluation set (the next variant's reference).
        all_outputs: Every output by name.
        violations: Output name to failed tolerance checks.
        tolerances: Output name to the thresholds applied (:meth:`Tolerance.to_dict`).
        samples: Labelled samples the metric was computed on (``None`` without labels).
        correct: Per-sample top-1 correctness (``top1`` only): the gate compares two runs image
            by image with it, and the Wilson interval of ``value`` comes from it.
        ref: Import reference of a user's metric (``None`` for built-ins).
        higher_is_better: Direction of ``metric`` (``False``: an error rate; the gate judges rises).
        metrics: Every task metric computed, name -> value: the main one plus ``top1``/``top5``
            where they apply next to a user's metric.
        reference: Name of the variant whose outputs ``fidelity`` compares with (``None``: unnamed or none).
        judged: Whether ``fidelity`` was checked against a tolerance; ``False``: reported only (e.g. a pruned
            FP32 model against the dense one, ``--reference VARIANT=none``).
    """

    metric: str
    value: float | None
    top5: float | None = None
    fidelity: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: np.ndarray | None = field(default=None, repr=False, compare=False)
    all_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    violations: dict[str, list[str]] = field(default_factory=dict)
    tolerances: dict[str, dict[str, float | None]] = field(default_factory=dict)
    samples: int | None = None
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)
    ref: str | None = None
    higher_is_better: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    reference: str | None = None
    judged: bool = True

    @property
    def fidelity_ok(self) -> bool | None:
        """Whether every compared output is within its tolerance (``None``: no reference, or not judged)."""
        return None if not self.fidelity or not self.judged else not self.violations

    def to_dict(self) -> dict[str, Any]:
        """Return the report's ``accuracy`` block."""
        from trtopt.benchmark.stats import pack_bits, wilson_interval

        d: dict[str, Any] = {"metric": self.metric, "value": self.value}
        if self.top5 is not None:
            d["top5"] = self.top5
        if self.samples is not None:
            d["samples"] = self.samples
        if self.ref is not None:
            d["ref"] = self.ref
        if not self.higher_is_better:
            d["higher_is_better"] = False
        if len(self.metrics) > 1:
            d["metrics"] = dict(self.metrics)
        if self.correct is not None and self.correct.size:
            d["ci95"] = list(wilson_interval(int(self.correct.sum()), int(self.correct.size)))
            d["correct_bits"] = pack_bits(self.correct)
        return d


def _as_feeds(x: np.ndarray | Mapping[str, np.ndarray], runner: Any, input_name: str | None) -> dict[str, np.ndarray]:
    if isinstance(x, Mapping):
        return {k: np.asarray(v) for k, v in x.items()}
    if input_name is None:
        names = [s.name for s in runner.input_specs()]
        if len(names) != 1:
            raise InputError(f"the model has inputs {names}: pass a dict of arrays or input_name")
        input_name = names[0]
    return {input_name: np.asarray(x)}


def run_batched(runner: Any, feeds: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Run ``feeds`` through ``runner`` in calls of ``batch_size`` samples and join the outputs.

    Calls follow the one batching rule (:mod:`trtopt.batching`): a model with a fixed batch
    dimension gets calls of exactly that size, whatever ``batch_size`` asks for; its last partial
    call is padded (by repeating samples) and the padding trimmed from the outputs.

    Raises:
        InputError: Inputs with different fixed batch sizes, or a runner that refuses the data.
    """
    from trtopt.batching import batch_rule

    rule = batch_rule({s.name: tuple(s.shape) for s in runner.input_specs()})
    return rule.run(runner.infer, feeds, batch_size)


def evaluate(
    runner: Any,
    x: np.ndarray | Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    reference: np.ndarray | Mapping[str, np.ndarray] | None = None,
    batch_size: int = 64,
    input_name: str | None = None,
    *,
    metric: str | MetricFn = "top1",
    output_name: str | None = None,
    tolerances: Tolerance | Mapping[str, Tolerance] | None = None,
    channel_splits: Mapping[str, ChannelSplit] | None = None,
    reference_name: str | None = None,
    judged: bool = True,
    kinds: Mapping[str, Any] | None = None,
) -> AccuracyResult:
    """Evaluate a runner's accuracy and fidelity.

    Args:
        runner: An active runner.
        x: Evaluation inputs (one array, or input name to array); samples on axis 0.
        labels: Labels for the task metric, or ``None`` (fidelity only).
        reference: FP32 outputs: an array (compared with the primary output) or output name to array.
        batch_size: Evaluation batch size.
        input_name: Input name when ``x`` is one array (default: the model's only input).
        metric: Built-in name (``top1``), ``package.module:function`` (``fn(outputs: dict[str, ndarray],
            labels) -> float``, see :mod:`trtopt.benchmark.metric`), a resolved
            :class:`~trtopt.benchmark.metric.Metric`, or ``fn(primary_output, labels) -> float``.
        output_name: Primary output (default: the model's first output).
        tolerances: One tolerance for every output or output name to tolerance; ``None`` (or an
            output missing from the mapping) gets :data:`DEFAULT_TOLERANCE`, ``Tolerance()``
            checks nothing.
        channel_splits: Output name to the channel axis/groups of its per-channel cosine
            (default: automatic, see :func:`fidelity`).
        reference_name: Name of the variant ``reference`` came from (reported with the fidelity).
        judged: ``False`` reports the fidelity to ``reference`` without checking any tolerance
            (``fidelity_ok`` is then ``None``: nothing was judged).
        kinds: Output name -> :class:`trtopt.judge.kinds.OutputKind`: such an output is judged by its task
            (:func:`trtopt.judge.verdict.judge_output`; FP32 NaN/Inf positions excluded), its fidelity gets
            ``kind``, ``kind_reason`` and ``task`` (the task metrics) next to the generic metrics.

    Returns:
        The accuracy result, including the primary output array for use as a later reference.

    Raises:
        InputError: The metric does not apply to the outputs, raised or returned a non-number, or
            inputs/batch do not fit.
        ConfigError: Unknown metric name.
    """
    task = resolve_metric(metric, _METRICS) if labels is not None else None
    feeds = _as_feeds(x, runner, input_name)
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    outs = run_batched(runner, feeds, batch_size)
    primary = output_name or next(iter(outs))
    if primary not in outs:
        raise InputError(f"no output named '{primary}' (outputs: {sorted(outs)})")
    main = outs[primary]
    metric_name, value, top5, correct, extra = "none", None, None, None, {}
    if task is not None:
        metric_name = task.name
        # read-only views: a user's metric cannot change the outputs the judge compares next
        value = task.compute({k: _readonly(v) for k, v in outs.items()}, primary, _readonly(np.asarray(labels)))
        extra = {task.name: value}
        if task.name == "top1" and main.ndim == 2 and main.shape[1] >= 5:
            top5 = topk_accuracy(main, labels, 5)
        if task.name == "top1":  # value is valid, so labels fit: keep which samples were right
            correct = main.argmax(1) == np.asarray(labels).reshape(-1).astype(np.int64)
        if not task.builtin:  # a user's metric: top-1/top-5 next to it where they apply
            extra.update(_builtin_alongside(main, np.asarray(labels)))
    fid: dict[str, dict[str, Any]] = {}
    bad: dict[str, list[str]] = {}
    used: dict[str, dict[str, float | None]] = {}
    if reference is not None:
        refs = reference if isinstance(reference, Mapping) else {primary: reference}
        check_tolerance_names(tolerances, list(outs))
        for name, ref in refs.items():
            if name not in outs:
                raise InputError(f"reference output '{name}' is not an output of this model ({sorted(outs)})")
            fid[name] = fidelity(np.asarray(ref), outs[name], (channel_splits or {}).get(name))
            tol = tolerance_for(tolerances, name)
            if kinds and name in kinds and kinds[name].kind == "generic":
                fid[name].update(kind="generic", kind_reason=kinds[name].describe())
            elif kinds and name in kinds:
                verdict = judge_output(name, kinds[name], np.asarray(ref), outs[name], tol)
                fid[name].update(kind=verdict.kind.kind, kind_reason=verdict.kind.describe(), task=verdict.metrics,
                                 fp32_nonfinite=verdict.fp32_nonfinite)
                if judged and verdict.violations:
                    bad[name] = verdict.violations
                if judged:
                    used[name] = tol.to_dict() if verdict.kind.kind == "generic" else \
                        {"min_task_agreement": verdict.kind.min_agreement}
                continue
            if not judged:
                continue
            used[name] = tol.to_dict()
            if v := tol.violations(fid[name]):
                bad[name] = v
    return AccuracyResult(metric=metric_name, value=value, top5=top5, fidelity=fid, outputs=main,
                          all_outputs=outs, violations=bad, tolerances=used,
                          samples=None if labels is None else len(main), correct=correct,
                          ref=task.ref if task else None, higher_is_better=task.higher_is_better if task else True,
                          metrics=extra, reference=reference_name if reference is not None else None,
                          judged=judged)


def _readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view of ``arr`` (``arr`` itself stays writable)."""
    view = np.asarray(arr).view()
    view.setflags(write=False)
    return view


def _builtin_alongside(main: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``top1``/``top5`` of the primary output where they apply (class-id labels, (N, C) scores)."""
    out: dict[str, float] = {}
    for k in (1, 5):
        try:
            out[f"top{k}"] = topk_accuracy(main, labels, k)
        except (InputError, ValueError, TypeError):
            break
    return out
