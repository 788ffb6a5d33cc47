"""One benchmark session: open runners, evaluate against references, gate FP16, time interleaved.

``trtopt bench`` (:func:`trtopt.benchmark.suite.bench_models`) and the recipe pipeline
(:class:`trtopt.pipeline.Pipeline`) both describe what to measure as :class:`SessionEntry` objects
and run them in one :class:`BenchSession`, so they share:

* **one reference policy** (:func:`reference_for`): a model is judged against the first model
  evaluated (the baseline; FP32 for a recipe), or against the earlier model its ``references`` entry
  names, on the same backend; ``"none"`` reports its fidelity to the baseline without judging it (a
  2:4-pruned model is another model). A named reference that produced no outputs (failed, skipped)
  falls back to the baseline, reported and not judged: its difference is not the variant's error.
* **one FP16-overflow gate** (:func:`fp16_overflow_reason`): ONNX Runtime's CPU kernels compute
  many float16 ops in float32, so an ONNX model computing in FP16 that overflows in FP16 arithmetic
  on the evaluation data is ``failed`` on that backend, not scored as fine.
* **one timing**: every runner stays open until all are timed, and the models of a batch size are
  timed together in interleaved rounds (:func:`trtopt.benchmark.interleave.time_comparison`), so
  drift and neighbours hit them alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from trtopt.benchmark.accuracy import AccuracyResult, evaluate
from trtopt.benchmark.config import BenchConfig
from trtopt.benchmark.interleave import time_comparison
from trtopt.benchmark.report import VariantResult
from trtopt.errors import BackendUnavailableError, ConfigError, InputError, MetricError, MissingDependencyError
from trtopt.judge.generic import check_tolerance_names
from trtopt.log import get_logger

if TYPE_CHECKING:
    from trtopt.onnx.macs import MacShare

log = get_logger(__name__)

Progress = Callable[[str, str], None]

#: backends whose CPU kernels compute float16 ops in float32, hiding FP16 overflow
FLOAT32_KERNEL_BACKENDS = ("onnxruntime",)


@dataclass(frozen=True)
class SessionEntry:
    """One model on one backend, as the session measures it.

    Attributes:
        name: Variant name (the report row's ``name``; what ``references`` use).
        backend: Backend name (the row's ``backend``).
        artifact: The model file measured (the row's ``artifact``; an ``.onnx`` file is FP16-gated),
            ``None`` for a variant that was not built.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        sparsity: ``dense`` or ``2:4``.
        open: ``open()`` -> a runner (a context manager, entered by the session). Raising
            :class:`MissingDependencyError` or :class:`BackendUnavailableError` makes the rows ``skipped``.
        feeds: ``feeds(runner)`` -> the evaluation inputs by name (all samples on axis 0).
        evaluation_data: Whether the feeds are evaluation data (``False``: random inputs, which the
            FP16 gate does not judge).
        extra: The rows' ``extra`` (the runner's description is added).
        not_run: ``(status, reason)``: rows with that status without opening anything (a variant
            that could not be built or was skipped).
    """

    name: str
    backend: str
    artifact: str | None
    precision: str
    sparsity: str
    open: Callable[[], Any] = lambda: None
    feeds: Callable[[Any], Mapping[str, np.ndarray]] = lambda _runner: {}
    evaluation_data: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)
    not_run: tuple[str, str] | None = None


def reference_for(name: str, references: Mapping[str, str], evaluated: Sequence[str]) -> tuple[str | None, bool]:
    """The reference policy (see module docstring): ``(reference, judged?)`` for variant ``name``.

    Args:
        name: The variant about to be evaluated.
        references: Variant -> the earlier variant it is judged against, or ``"none"``.
        evaluated: Variants already evaluated on this backend.

    Returns:
        ``(the named reference, True)`` when it was evaluated; else ``(None, judged)``: compared with
        the baseline, judged only when ``references`` names nothing for ``name``.
    """
    ref = references.get(name)
    if ref is not None and ref != "none" and ref in evaluated:
        return ref, True
    return None, ref is None


def missing_reference_note(name: str, references: Mapping[str, str], evaluated: Sequence[str]) -> str:
    """Why ``name`` is not judged when its named reference produced no outputs (``""`` otherwise)."""
    ref = references.get(name)
    if ref is None or ref == "none" or ref in evaluated:
        return ""
    return (f"not judged: its reference '{ref}' has no outputs in this run (not among the variants, or it "
            f"failed); compared with the baseline instead, whose difference is not this variant's error: "
            f"run '{ref}' too to judge it")


def check_references(references: Mapping[str, str], names: Sequence[str]) -> None:
    """Each ``variant=reference`` pair names models of this run, the reference given before the variant.

    Raises:
        ConfigError: Unknown names, or a reference that comes later (its outputs are not known yet).
    """
    names = list(names)
    for variant, ref in references.items():
        if variant not in names:
            raise ConfigError(f"--reference {variant}={ref}: no model named '{variant}' (models: {', '.join(names)})")
        if ref == "none":
            continue
        if ref not in names or names.index(ref) >= names.index(variant):
            raise ConfigError(f"--reference {variant}={ref}: the reference must be a model given before "
                              f"'{variant}' (models in order: {', '.join(names)}), or 'none'")


def fp16_overflow_reason(path: str | os.PathLike[str], data: Mapping[str, np.ndarray]) -> str:
    """Why an ONNX model computing in FP16 is not ok on ``data`` (FP16-arithmetic overflow), or ``""``.

    :func:`trtopt.quant.fp16_check.fp16_overflows` checks the first few samples as FP16 arithmetic
    would compute them; a file that is not ``.onnx`` or computes no FP16 is ok.
    """
    if not str(path).endswith(".onnx"):
        return ""
    from trtopt.onnx.io import load_onnx
    from trtopt.onnx.precision import computes_fp16
    from trtopt.quant.fp16_check import fp16_overflows

    model = load_onnx(path, check=False)
    if not computes_fp16(model):
        return ""
    found = fp16_overflows(model, data)
    return f"overflows in FP16 arithmetic (hidden by ONNX Runtime's CPU float32 kernels): {found[0]}" if found else ""


def fixed_batch(runner: Any) -> int | None:
    """Return the model's static batch size, or ``None`` when the batch axis is dynamic."""
    for s in runner.input_specs():
        if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0:
            return int(s.shape[0])
    return None


def check_batches(runner: Any, batch_sizes: Sequence[int], label: str) -> None:
    """Raise a one-line :class:`InputError` when the model cannot take a requested batch size."""
    fixed = fixed_batch(runner)
    bad = [b for b in batch_sizes if fixed is not None and b != fixed]
    if bad:
        raise InputError(f"{label} has a fixed batch of {fixed}; it cannot take batch size(s) "
                         f"{', '.join(map(str, bad))} (use --batch {fixed} or export with a dynamic batch)")


def batch_of(feeds: Mapping[str, np.ndarray], bs: int) -> dict[str, np.ndarray]:
    """``bs`` samples of ``feeds`` (cycling when there are fewer), contiguous."""
    n = len(next(iter(feeds.values())))
    idx = np.arange(bs) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}


def int8_macs_of(entry: SessionEntry, feeds: Mapping[str, np.ndarray]) -> MacShare | None:
    """INT8 MAC share of an INT8 ``.onnx`` entry at one sample of ``feeds`` (``None`` for other entries).

    Only the graph is read (no external weight data). A graph shape inference cannot follow at those
    shapes gives ``None`` and a warning: the benchmark stands without the column.
    """
    if entry.precision != "int8" or not entry.artifact or not str(entry.artifact).endswith(".onnx"):
        return None
    import onnx

    from trtopt.macshare import model_mac_share

    try:
        return model_mac_share(onnx.load(str(entry.artifact), load_external_data=False), feeds=feeds)
    except (InputError, OSError) as exc:
        log.warning("%s: INT8 MAC share not counted: %s", entry.name, exc)
        return None


def _open(entry: SessionEntry) -> Any:
    """Open and enter ``entry``'s runner; a backend missing from this build is a MissingDependencyError."""
    try:
        runner = entry.open()
        runner.__enter__()
    except ImportError as exc:  # a backend module not (fully) shipped in this build
        if not str(exc.name).startswith("trtopt.backends"):
            raise
        raise MissingDependencyError(entry.backend, entry.backend,
                                     f"trtopt has no {entry.backend} runner in this build") from None
    return runner


class BenchSession:
    """Evaluate then time :class:`SessionEntry` objects into report rows; a context manager.

    Every runner opened by :meth:`evaluate` stays open until the session exits, so :meth:`time`
    times all of them together. :meth:`run` does both.

    Args:
        cfg: Batch sizes, timing settings and fidelity tolerances.
        labels: Labels for the task metric, or ``None``.
        metric: The task metric (a :class:`~trtopt.benchmark.metric.Metric` or a name).
        references: Variant -> the earlier variant it is judged against, or ``"none"``
            (see :func:`reference_for`).
        progress: ``progress(stage, detail)`` callback.
        failures: Errors opening or evaluating one entry that make its rows ``failed`` instead of
            propagating (the recipe: ``(TrtoptError,)``); a :class:`MetricError` always propagates.

    Attributes:
        unavailable: Backend -> the error that made its rows ``skipped``.
        checked_outputs: Whether the tolerance names were checked against a model's outputs (set it
            beforehand when the caller checked them; else the first evaluated model's outputs are used).
    """

    def __init__(self, cfg: BenchConfig, *, labels: np.ndarray | None = None, metric: Any = "top1",
                 references: Mapping[str, str] | None = None, progress: Progress | None = None,
                 failures: tuple[type[Exception], ...] = ()) -> None:
        self.cfg, self.labels, self.metric = cfg, labels, metric
        self.references = dict(references or {})
        self.progress = progress or (lambda _s, _d: None)
        self.failures = failures
        self.unavailable: dict[str, Exception] = {}
        self.checked_outputs = False
        self.rows: list[VariantResult] = []
        self._timed: list[tuple[int, Any, str, Mapping[str, np.ndarray]]] = []  # (first row, runner, label, feeds)
        self._graph: str | None = None  # the first ONNX artifact: where output kinds are recognized
        self._kinds: dict[str, Any] | None = None
        self._stack = ExitStack()

    def __enter__(self) -> BenchSession:
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def _skip(self, e: SessionEntry, status: str, reason: str, artifact: str | None) -> None:
        self.rows += [VariantResult(e.name, e.backend, e.precision, e.sparsity, bs, None, None, artifact, status,
                                    reason) for bs in self.cfg.batch_sizes]

    def _evaluate(self, e: SessionEntry, runner: Any, feeds: Mapping[str, np.ndarray],
                  seen: Mapping[str, Any], baseline: tuple[str, Any] | None) -> AccuracyResult:
        check_batches(runner, self.cfg.batch_sizes, f"'{e.artifact}'")
        fixed = fixed_batch(runner)
        runner.check_inputs(batch_of(feeds, 1 if fixed is None else fixed))
        named, judged = reference_for(e.name, self.references, list(seen))
        compared, reference = (named, seen[named]) if named is not None else (baseline or (None, None))
        return evaluate(runner, feeds, labels=self.labels, reference=reference,
                        batch_size=self.cfg.effective_eval_batch_size, metric=self.metric,
                        tolerances=self.cfg.output_tolerances(), judged=judged, reference_name=compared,
                        kinds=None if reference is None else self._output_kinds(reference))

    def _output_kinds(self, reference: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Kinds of the reference's outputs: declared (``bench.output_kinds``), else recognized from the graph."""
        if self._kinds is None:
            import onnx

            from trtopt.judge.kinds import check_declared
            from trtopt.judge.recognize import recognize

            declared = self.cfg.declared_kinds()
            shapes = {k: np.shape(v) for k, v in reference.items()}
            if self._graph is None:
                check_declared(declared, list(shapes))
                self._kinds = dict(declared)
            else:
                self._kinds = recognize(onnx.load(self._graph, load_external_data=False), shapes, declared)
        return self._kinds

    def evaluate(self, entries: Sequence[SessionEntry]) -> list[VariantResult]:
        """Open and evaluate every entry in order; rows untimed until :meth:`time`.

        The baseline is the first entry's model, on the first backend where it was evaluated (named
        ``"NAME (BACKEND)"`` when the entries span several backends); without it nothing is judged.

        Returns:
            One row per entry and batch size, in entry order (also :attr:`rows`).

        Raises:
            InputError: Bad model, data or batch size (unless in ``failures``).
        """
        seen: dict[str, dict[str, Any]] = {}  # backend -> variant -> its outputs
        baseline: tuple[str, Any] | None = None  # (name, outputs) of the first entry's model
        several = len({e.backend for e in entries}) > 1
        for e in entries:
            if e.not_run is not None:
                self._skip(e, *e.not_run, artifact=e.artifact)
                continue
            self.progress("bench", f"{e.name} on {e.backend} (evaluate)")
            if self._graph is None and e.artifact and str(e.artifact).endswith(".onnx"):
                self._graph = str(e.artifact)
            try:
                runner = _open(e)
            except (MissingDependencyError, BackendUnavailableError) as exc:
                self.unavailable[e.backend] = exc
                self._skip(e, "skipped", str(exc), artifact=e.artifact)
                continue
            except self.failures as exc:  # e.g. a variant the backend has no path for
                self._skip(e, "failed", str(exc), artifact=None)
                continue
            self._stack.callback(runner.__exit__, None, None, None)
            try:
                feeds = e.feeds(runner)
                acc = self._evaluate(e, runner, feeds, seen.get(e.backend, {}), baseline)
            except MetricError:
                raise  # the user's metric fails every variant alike
            except self.failures as exc:
                self._skip(e, "failed", str(exc), artifact=None)
                continue
            note = missing_reference_note(e.name, self.references, list(seen.get(e.backend, {})))
            extra = {**e.extra, "runner": runner.describe(), **({"fidelity_note": note} if note else {})}
            seen.setdefault(e.backend, {})[e.name] = acc.all_outputs
            if baseline is None and e.name == entries[0].name:
                baseline = (f"{e.name} ({e.backend})" if several else e.name, acc.all_outputs)
            if not self.checked_outputs:  # a typo in an output name is never ignored
                check_tolerance_names(self.cfg.output_tolerances(), list(acc.all_outputs))
                self.checked_outputs = True
            macs = int8_macs_of(e, feeds)
            new = [VariantResult(e.name, runner.backend, e.precision, e.sparsity, bs, None, acc, e.artifact,
                                 "ok", "", extra=extra, macs=macs)
                   for bs in self.cfg.batch_sizes]
            overflow = (fp16_overflow_reason(e.artifact, feeds)
                        if e.backend in FLOAT32_KERNEL_BACKENDS and e.evaluation_data and e.artifact else "")
            if overflow:  # scored in float32 kernels; FP16 hardware would not
                new = [replace(r, status="failed", reason=overflow) for r in new]
            else:
                self._timed.append((len(self.rows), runner, f"{e.name} ({e.backend})", feeds))
            self.rows += new
        return self.rows

    @property
    def pending(self) -> int:
        """Evaluated entries waiting for :meth:`time`."""
        return len(self._timed)

    def time(self) -> None:
        """Time every evaluated entry that is ok, interleaved per batch size; fills the rows' ``timing``."""
        if not self._timed:
            return
        self.progress("bench", f"timing {len(self._timed)} variant(s) in interleaved rounds "
                               f"(batch {', '.join(map(str, self.cfg.batch_sizes))})")
        feeds_of = {i: f for i, _, _, f in self._timed}
        got = time_comparison([(i, r, lab) for i, r, lab, _ in self._timed], self.cfg.batch_sizes,
                              lambda i, bs: batch_of(feeds_of[i], bs), self.cfg)
        for i, _, _, _ in self._timed:
            for j, bs in enumerate(self.cfg.batch_sizes):
                self.rows[i + j].timing = got[(i, bs)]
        self._timed = []

    def run(self, entries: Sequence[SessionEntry]) -> list[VariantResult]:
        """:meth:`evaluate` then :meth:`time` ``entries``, closing every runner after.

        Returns:
            One timed row per entry and batch size, in entry order.
        """
        with self:
            self.evaluate(entries)
            self.time()
        return self.rows
