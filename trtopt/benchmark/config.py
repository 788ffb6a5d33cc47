"""Benchmark settings: the ``[bench]`` table of a recipe and the options of ``trtopt bench``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trtopt.errors import ConfigError

#: timing modes a caller may ask for; "auto" picks "cpu" on CPU runners and "gpu-no-transfer" on GPU
TIMING_MODES = ("auto", "cpu", "gpu-e2e", "gpu-no-transfer", "cuda-graph")


@dataclass(frozen=True)
class BenchConfig:
    """How a variant is timed and evaluated.

    Timing runs ``warmup`` untimed iterations, then either exactly ``iterations`` timed
    iterations or, when ``iterations`` is ``None``, as many as fit in ``min_duration_s``
    (at least ``min_iterations``, at most ``max_iterations``).

    Attributes:
        warmup: Untimed iterations before measuring (lets allocators, caches, clocks settle).
        iterations: Fixed count of timed iterations, or ``None`` to time by duration.
        min_duration_s: Minimum timed duration when ``iterations`` is ``None``.
        max_iterations: Upper bound on timed iterations in duration mode.
        min_iterations: Lower bound on timed iterations in duration mode (percentiles need samples).
        batch_sizes: Batch sizes to sweep (a TOML list becomes a tuple).
        mode: Timing mode (see :data:`TIMING_MODES`); GPU modes need a GPU runner.
        cv_threshold: Coefficient of variation of the latencies above which a run is flagged
            unstable (trtexec warns above about 5%).
        eval_batch_size: Batch size for accuracy evaluation; 0 = the largest of ``batch_sizes``.
        metric: Task metric: a built-in name (``top1``/``top5`` for classifiers; more with
            :func:`trtopt.benchmark.register_metric`) or your function as ``package.module:function``,
            called ``fn(outputs: dict[str, np.ndarray], labels: np.ndarray) -> float`` over the whole
            evaluation set (higher is better unless ``fn.higher_is_better = False``; see
            :mod:`trtopt.benchmark.metric`). Needs labels in the data.
        min_sqnr_db: Fidelity tolerance applied to every output (``None`` = the default).
        min_cosine: Fidelity tolerance applied to every output.
        max_abs_err: Fidelity tolerance applied to every output.
        min_top1_agreement: Fidelity tolerance (percent) applied to every classifier output
            (per sample) and sequence output (per position).
        min_channel_cosine: Fidelity tolerance on the worst channel's cosine.
        regression_outputs: Outputs whose argmax means nothing (box coordinates, embeddings, any
            regression value): judged by cosine and worst-channel cosine, not by top-1 agreement.
        output_kinds: Output name -> ``"KIND[:options]"`` (:func:`trtopt.judge.kinds.parse_kind`): how that
            output is judged where recognition from shapes and the graph is unsure; the others are recognized.
        rounds: Most interleaved rounds per comparison: the variants of one comparison
            are timed round-robin, each getting ``min_duration_s / rounds`` (or ``iterations /
            rounds``) per round; fewer rounds are run when one iteration does not fit.
        min_rounds: Fewest rounds a comparison may have: a budget too short for them is an error
            (an interval from fewer rounds means little).
        seed: Seed of the randomised round starts (``None`` = a fresh one every run).

    Unset tolerances keep :data:`trtopt.benchmark.accuracy.DEFAULT_TOLERANCE` (cosine >= 0.99,
    worst channel cosine >= 0.99, top-1 agreement >= 99 %); set ``0`` / ``-1`` to accept anything.
    """

    warmup: int = 10
    iterations: int | None = None
    min_duration_s: float = 1.0
    max_iterations: int = 100000
    min_iterations: int = 10
    batch_sizes: tuple[int, ...] = (1,)
    mode: str = "auto"
    cv_threshold: float = 0.05
    eval_batch_size: int = 0
    metric: str = "top1"
    min_sqnr_db: float | None = None
    min_cosine: float | None = None
    max_abs_err: float | None = None
    min_top1_agreement: float | None = None
    min_channel_cosine: float | None = None
    regression_outputs: tuple[str, ...] = ()
    output_kinds: Mapping[str, str] = field(default_factory=dict)
    rounds: int = 20
    min_rounds: int = 5
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch_sizes, int):
            object.__setattr__(self, "batch_sizes", (self.batch_sizes,))
        try:
            object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        except (TypeError, ValueError):
            raise ConfigError(f"bench.batch_sizes must be a list of integers, got {self.batch_sizes!r}") from None
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise ConfigError(f"bench.batch_sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.warmup < 0:
            raise ConfigError(f"bench.warmup must be >= 0, got {self.warmup}")
        if self.iterations is not None and self.iterations <= 0:
            raise ConfigError(f"bench.iterations must be positive, got {self.iterations}")
        if self.min_duration_s < 0:
            raise ConfigError(f"bench.min_duration_s must be >= 0, got {self.min_duration_s}")
        if self.min_iterations <= 0 or self.max_iterations < self.min_iterations:
            raise ConfigError(
                f"bench.min_iterations ({self.min_iterations}) must be positive and <= "
                f"bench.max_iterations ({self.max_iterations})"
            )
        if self.mode not in TIMING_MODES:
            raise ConfigError(f"bench.mode must be one of {', '.join(TIMING_MODES)}, got '{self.mode}'")
        if not self.cv_threshold > 0:
            raise ConfigError(f"bench.cv_threshold must be positive, got {self.cv_threshold}")
        if self.min_rounds < 2 or self.rounds < self.min_rounds:
            raise ConfigError(f"bench.rounds ({self.rounds}) must be >= bench.min_rounds ({self.min_rounds}), "
                              "which must be >= 2")
        from trtopt.benchmark.accuracy import known_metrics
        from trtopt.benchmark.metric import check_metric_name

        check_metric_name(self.metric, known_metrics(), "bench.metric")  # form only: imported when benching
        if isinstance(self.regression_outputs, str):
            object.__setattr__(self, "regression_outputs", (self.regression_outputs,))
        object.__setattr__(self, "regression_outputs", tuple(self.regression_outputs))
        if not all(isinstance(n, str) and n for n in self.regression_outputs):
            raise ConfigError(f"bench.regression_outputs must be output names, got {list(self.regression_outputs)}")
        if self.eval_batch_size < 0:
            raise ConfigError(f"bench.eval_batch_size must be >= 0, got {self.eval_batch_size}")
        if not isinstance(self.output_kinds, Mapping):
            raise ConfigError(f"bench.output_kinds must be a table NAME = \"KIND[:options]\", "
                              f"got {self.output_kinds!r}")
        self.declared_kinds()  # a bad kind fails here, with its name

    def declared_kinds(self) -> dict[str, Any]:
        """``output_kinds`` parsed: output name -> :class:`trtopt.judge.kinds.OutputKind`.

        Raises:
            ConfigError: A bad kind or option (one line naming the output).
        """
        from trtopt.judge.kinds import parse_declarations

        return parse_declarations(dict(self.output_kinds))

    def tolerance(self):  # -> trtopt.benchmark.accuracy.Tolerance
        """Return the fidelity tolerance: the default with every tolerance set here applied on top.

        Raises:
            ConfigError: A tolerance outside its range.
        """
        from trtopt.benchmark.accuracy import DEFAULT_TOLERANCE

        keys = ("min_sqnr_db", "min_cosine", "max_abs_err", "min_top1_agreement", "min_channel_cosine")
        return DEFAULT_TOLERANCE.merged(**{k: getattr(self, k) for k in keys})

    def output_tolerances(self):  # -> Tolerance | dict[str, Tolerance]
        """:meth:`tolerance` for every output, without the argmax-agreement check on ``regression_outputs``."""
        from trtopt.judge.generic import with_regression_outputs

        return with_regression_outputs(self.tolerance(), self.regression_outputs)

    @property
    def effective_eval_batch_size(self) -> int:
        """Batch size used for accuracy evaluation."""
        return self.eval_batch_size or max(self.batch_sizes)
