"""``trtopt bench`` as a library call: models x backends x batch sizes -> a finalized Report.

Precision and sparsity of an ONNX model are read from the graph: Q/DQ nodes mean ``int8``,
float16 computation anywhere (initializers, ``Constant`` nodes, Casts, I/O, subgraphs) means
``fp16``; ``2:4`` when at least half of the eligible Conv/Gemm/MatMul weights are 2:4 along the
axis TensorRT prunes. Without evaluation data the inputs are random
(throughput only; fidelity against the first model, which should be the FP32 one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.benchmark.accuracy import evaluate, known_metrics
from trtopt.benchmark.config import BenchConfig
from trtopt.benchmark.environment import capture_environment
from trtopt.benchmark.interleave import time_comparison
from trtopt.benchmark.report import Report, VariantResult
from trtopt.benchmark.timing import measure
from trtopt.errors import BackendUnavailableError, ConfigError, InputError, MissingDependencyError

Progress = Callable[[str, str], None]


def describe_onnx(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Return ``(precision, sparsity)`` of an ONNX model file (see module docstring)."""
    from trtopt.onnx_graph import load_onnx, model_computes_fp16
    from trtopt.sparsity.onnx_check import check_onnx_layers

    model = load_onnx(path, check=False)
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        precision = "int8"
    elif model_computes_fp16(model):  # whole graph: Constant-node weights, Casts, I/O, subgraphs
        precision = "fp16"
    else:
        precision = "fp32"
    _, summary = check_onnx_layers(model)
    sparse = summary["compliant"] > 0 and summary["compliant"] * 2 >= max(summary["eligible"], 1)
    return precision, "2:4" if sparse else "dense"


def fp16_overflow_reason(path: str | os.PathLike[str], data: Mapping[str, np.ndarray]) -> str:
    """Why an ONNX model computing in FP16 is not ok on ``data`` (FP16-arithmetic overflow), or ``""``.

    ONNX Runtime's CPU kernels compute many float16 ops in float32, so a model that overflows on FP16
    hardware can score perfectly in a CPU benchmark; :func:`trtopt.quant.fp16_check.fp16_overflows`
    checks the first few samples as FP16 arithmetic would compute them.
    """
    if not str(path).endswith(".onnx"):
        return ""
    from trtopt.onnx_graph import load_onnx, model_computes_fp16
    from trtopt.quant.fp16_check import fp16_overflows

    model = load_onnx(path, check=False)
    if not model_computes_fp16(model):
        return ""
    found = fp16_overflows(model, data)
    return f"overflows in FP16 arithmetic (hidden by ONNX Runtime's CPU float32 kernels): {found[0]}" if found else ""


def load_eval_data(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read an evaluation ``.npz``: input arrays by name plus optional ``labels``.

    Raises:
        InputError: Missing/corrupt file, no inputs, or arrays of different lengths.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"data file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {p} as .npz: {exc}") from None
    labels = arrays.pop("labels", None)
    if not arrays:
        raise InputError(f"{p} holds no input arrays (only {sorted(arrays) or 'labels'})")
    lengths = {k: len(v) for k, v in arrays.items()} | ({"labels": len(labels)} if labels is not None else {})
    if len(set(lengths.values())) != 1:
        raise InputError(f"arrays in {p} have different lengths: {lengths}")
    return arrays, labels


def random_feeds(specs: Sequence[Any], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``specs`` with ``n`` samples (floats ~N(0,1), integers in [0, 100), bools True).

    Raises:
        InputError: A non-batch dimension is dynamic (its size is unknown without data).
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        rest = s.shape[1:]
        if not s.shape:
            raise InputError(f"the shape of input '{s.name}' is unknown: pass --data EVAL.npz")
        if any(not isinstance(d, int) or d < 0 for d in rest):
            raise InputError(f"input '{s.name}' has dynamic dimensions {list(s.shape)}: pass --data EVAL.npz")
        shape = (n, *rest)
        if np.issubdtype(s.dtype, np.floating):
            feeds[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype == np.bool_:
            feeds[s.name] = np.ones(shape, dtype=bool)
        else:
            feeds[s.name] = rng.integers(0, 100, size=shape).astype(s.dtype)
    return feeds


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


def _batch_of(feeds: Mapping[str, np.ndarray], bs: int) -> dict[str, np.ndarray]:
    n = len(next(iter(feeds.values())))
    idx = np.arange(bs) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}


def _skipped(name: str, backend: str, precision: str, sparsity: str, cfg: BenchConfig, artifact: str,
             reason: str, status: str = "skipped") -> list[VariantResult]:
    return [VariantResult(name, backend, precision, sparsity, bs, None, None, artifact, status, reason)
            for bs in cfg.batch_sizes]


def evaluate_one(runner: Any, cfg: BenchConfig, data: Mapping[str, np.ndarray], labels: np.ndarray | None,
                 reference: Any, metric: str, label: str) -> Any:
    """Check batch sizes and inputs, then evaluate accuracy/fidelity of one active runner."""
    check_batches(runner, cfg.batch_sizes, label)
    runner.check_inputs(_batch_of(data, 1 if fixed_batch(runner) is None else fixed_batch(runner)))
    eval_bs = fixed_batch(runner) or cfg.effective_eval_batch_size
    return evaluate(runner, data, labels=labels, reference=reference, batch_size=eval_bs, metric=metric,
                    tolerances=cfg.tolerance())


def bench_one(runner: Any, name: str, precision: str, sparsity: str, artifact: str, cfg: BenchConfig,
              data: Mapping[str, np.ndarray], labels: np.ndarray | None, reference: Any, metric: str
              ) -> tuple[list[VariantResult], Any]:
    """Evaluate then time one active runner at every batch size; returns rows and the accuracy.

    Sequential timing (no interleaving, no intervals); :func:`bench_models` times all variants together.
    """
    acc = evaluate_one(runner, cfg, data, labels, reference, metric, f"'{artifact}'")
    rows = []
    for bs in cfg.batch_sizes:
        t = measure(runner, _batch_of(data, bs), cfg, batch_size=bs)
        rows.append(VariantResult(name, runner.backend, precision, sparsity, bs, t, acc, artifact, "ok", "",
                                  extra={"runner": runner.describe()}))
    return rows, acc


def _unique_names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem if p.endswith((".onnx", ".pt")) or os.sep in p else p for p in paths]
    out = []
    for i, s in enumerate(stems):
        n = stems[:i].count(s)
        out.append(s if n == 0 else f"{s}-{n + 1}")
    return out


def bench_models(models: Sequence[str | os.PathLike[str]], backends: Sequence[str], cfg: BenchConfig, *,
                 data: Mapping[str, np.ndarray] | None = None, labels: np.ndarray | None = None,
                 metric: str = "top1", num_samples: int = 64, runner_kwargs: Mapping[str, Any] | None = None,
                 progress: Progress | None = None) -> Report:
    """Benchmark every model on every backend at every batch size.

    Args:
        models: ONNX files (or, for the torch backend, what :class:`TorchRunner` accepts).
        backends: Backend names; one that is not installed yields ``skipped`` rows with the reason.
        cfg: Timing settings and batch sizes.
        data: Evaluation inputs by name, or ``None`` for random inputs.
        labels: Labels for the task metric.
        metric: Task metric name (used only with labels).
        num_samples: Random evaluation samples when ``data`` is ``None``.
        runner_kwargs: Backend name to keyword arguments for :func:`open_runner`.
        progress: ``progress(stage, detail)`` callback.

    Returns:
        The finalized report.

    Raises:
        InputError: Bad model, data or batch size; MissingDependencyError when no backend is available.
    """
    from trtopt.backends import open_runner

    if labels is not None and metric not in known_metrics():
        raise ConfigError(f"unknown metric '{metric}' (registered: {', '.join(known_metrics())})")
    progress = progress or (lambda _s, _d: None)
    variants: list[VariantResult] = []
    reference, unavailable = None, {}
    names = _unique_names([str(m) for m in models])
    # Every runner stays open until all are timed: the variants of a batch size are timed together in
    # interleaved rounds (issue 14), so drift and neighbours hit them alike.
    with ExitStack() as stack:
        timed: list[tuple[int, Any, str, Mapping[str, np.ndarray]]] = []  # (first row index, runner, label, feeds)
        for backend in backends:
            for m, name in zip(models, names):
                path = str(m)
                precision, sparsity = describe_onnx(path) if path.endswith(".onnx") else ("fp32", "dense")
                kwargs = dict((runner_kwargs or {}).get(backend, {}))
                if backend == "torch":
                    precision, sparsity = kwargs.get("precision", "fp32"), "2:4" if kwargs.get("sparse24") else "dense"
                progress("bench", f"{name} on {backend} (evaluate)")
                try:
                    runner = open_runner(backend, path, **kwargs)
                    runner.__enter__()
                except ImportError as exc:  # a backend module not (fully) shipped in this build
                    if not str(exc.name).startswith("trtopt.backends"):
                        raise
                    err = MissingDependencyError(backend, backend, f"trtopt has no {backend} runner in this build")
                    unavailable[backend] = err
                    variants += _skipped(name, backend, precision, sparsity, cfg, path, str(err))
                    continue
                except (MissingDependencyError, BackendUnavailableError) as exc:
                    unavailable[backend] = exc
                    variants += _skipped(name, backend, precision, sparsity, cfg, path, str(exc))
                    continue
                stack.callback(runner.__exit__, None, None, None)
                feeds = data if data is not None else random_feeds(runner.input_specs(), num_samples)
                acc = evaluate_one(runner, cfg, feeds, labels, reference, metric, f"'{path}'")
                rows = [VariantResult(name, runner.backend, precision, sparsity, bs, None, acc, path, "ok", "",
                                      extra={"runner": runner.describe()}) for bs in cfg.batch_sizes]
                overflow = fp16_overflow_reason(path, data) if backend == "onnxruntime" and data is not None else ""
                if overflow:  # ONNX Runtime's CPU scored it in float32 kernels; FP16 hardware would not
                    rows = [replace(r, status="failed", reason=overflow) for r in rows]
                else:
                    timed.append((len(variants), runner, f"{name} ({backend})", feeds))
                reference = acc.all_outputs if reference is None else reference
                variants += rows
        if timed:
            progress("bench", f"timing {len(timed)} variant(s) in interleaved rounds "
                              f"(batch {', '.join(map(str, cfg.batch_sizes))})")
            feeds_of = {i: f for i, _, _, f in timed}
            got = time_comparison([(i, r, lab) for i, r, lab, _ in timed], cfg.batch_sizes,
                                  lambda i, bs: _batch_of(feeds_of[i], bs), cfg)
            for i, _, _, _ in timed:
                for j, bs in enumerate(cfg.batch_sizes):
                    variants[i + j].timing = got[(i, bs)]
    if len(unavailable) == len(set(backends)):
        raise next(iter(unavailable.values()))
    workload = {"name": Path(str(models[0])).stem, "models": [str(m) for m in models],
                "data": "given" if data is not None else "random inputs: throughput and fidelity only",
                "labels": labels is not None, "reference": "first model (fidelity baseline)"}
    return Report(environment=capture_environment(), workload=workload, variants=variants).finalize()


def layerwise_all(models: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                  data: Mapping[str, np.ndarray] | None = None, num_samples: int = 32) -> dict[str, list[Any]]:
    """Compare every later ONNX model layer by layer with the first; write ``layerwise/<name>.json``.

    Args:
        models: ONNX files, reference (FP32) first.
        out_dir: Report folder.
        data: Inputs (the first ``num_samples`` are used), or ``None`` for random inputs.
        num_samples: Samples to compare on.

    Returns:
        Model name to its ranked :class:`~trtopt.benchmark.layerwise.LayerError` list.
    """
    from trtopt.backends.onnxrt import OnnxRuntimeRunner
    from trtopt.benchmark.layerwise import compare_layers
    from trtopt.fileio import atomic_write_json

    paths = [str(m) for m in models if str(m).endswith(".onnx")]
    if len(paths) < 2:
        raise InputError("layer-wise comparison needs the FP32 model and at least one more .onnx model")
    if data is None:
        with OnnxRuntimeRunner(paths[0]) as r:
            data = random_feeds(r.input_specs(), num_samples)
    feeds = {k: np.ascontiguousarray(v[:num_samples]) for k, v in data.items()}
    results = {}
    for path, name in zip(paths[1:], _unique_names(paths)[1:]):
        layers = compare_layers(paths[0], path, feeds)
        atomic_write_json(Path(out_dir) / "layerwise" / f"{name}.json",
                          {"reference": paths[0], "candidate": path, "ranked_by": "local_sqnr_db",
                           "samples": len(next(iter(feeds.values()))), "layers": [e.to_dict() for e in layers]})
        results[name] = layers
    return results
