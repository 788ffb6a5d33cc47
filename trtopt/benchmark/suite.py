"""``trtopt bench`` as a library call: models x backends x batch sizes -> a finalized Report.

Precision and sparsity of an ONNX model are read from the graph: Q/DQ nodes mean ``int8``,
float16 computation anywhere (initializers, ``Constant`` nodes, Casts, I/O, subgraphs) means
``fp16``; ``2:4`` when at least half of the eligible Conv/Gemm/MatMul weights are 2:4 along the
axis TensorRT prunes. Without evaluation data the inputs are random
(throughput only; fidelity against the first model, which should be the FP32 one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.benchmark.accuracy import evaluate, get_metric
from trtopt.benchmark.config import BenchConfig
from trtopt.benchmark.environment import capture_environment
from trtopt.benchmark.fidelity import check_tolerance_names
from trtopt.benchmark.interleave import time_comparison
from trtopt.benchmark.report import Report, VariantResult
from trtopt.benchmark.timing import measure
from trtopt.errors import BackendUnavailableError, InputError, MissingDependencyError
from trtopt.optional import missing_dependency

Progress = Callable[[str, str], None]

#: report.md / report.json note of a run without evaluation data
RANDOM_INPUTS_NOTE = ("Random inputs drawn from the input specs (no evaluation data): throughput and fidelity only; "
                      "fidelity on random inputs can differ from real data.")


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


def load_eval_data(path: str | os.PathLike[str], models: Sequence[str | os.PathLike[str]] = ()
                   ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read an evaluation ``.npz`` (:func:`trtopt.dataset.load_npz`): input arrays by name plus optional labels.

    The format is ``docs/data-format.md``. The whole file is checked against every ``.onnx`` model in
    ``models`` before anything runs (:meth:`trtopt.dataset.Dataset.check_onnx`), so a wrong array is
    reported naming the file and its shape (not a batch's, after the first model's evaluation).

    Raises:
        InputError: Missing/corrupt file, a folder, pickled arrays, no inputs, arrays of different
            lengths, ``static:`` arrays (bench feeds batched inputs only), or arrays that cannot feed
            one of the models (names, dtype, rank, fixed dims).
    """
    from trtopt.dataset import load_npz

    ds = load_npz(path)
    if ds.static:
        raise InputError(f"{ds.source}: bench feeds batched inputs only; per-call constant array(s) "
                         f"{sorted(ds.static)} ('static:' keys) are not supported here")
    for m in models:
        if str(m).endswith(".onnx"):
            ds.check_onnx(m)
    return ds.inputs, ds.labels


def bench_specs(model_path: str | os.PathLike[str], declared: Sequence[Any] = ()) -> tuple[Any, ...]:
    """Input specs for random feeds of an ONNX model: the graph's, with ``--input`` declarations on top.

    The graph gives names, dtypes, fixed dims and value ranges (token ids below the embedding
    table's rows, masks 0/1: :func:`trtopt.inputs.specs_from_onnx`); a declared spec replaces the
    graph's for its input (keeping the graph's value range when it declares none). A fixed axis 0 is
    treated as the batch axis (samples), as the data format does.

    Raises:
        InputError: A declared spec contradicts the model, or a non-batch dim is dynamic and neither
            declared nor given by data (the message says which ``--input`` to pass).
    """
    from trtopt.inputs import Dim, check_specs_against_onnx, specs_from_onnx
    from trtopt.onnx_graph import load_onnx

    model = load_onnx(model_path, check=False)
    if declared:
        check_specs_against_onnx(declared, model, where=f"--input for {Path(model_path).name}")
    given = {s.name: s for s in declared}
    out = []
    for g in specs_from_onnx(model):
        s = given.get(g.name)
        if s is not None and s.low is None and g.low is not None:
            s = replace(s, low=g.low, high=g.high)
        if s is None:
            dyn = [ax for ax, d in enumerate(g.dims) if ax > 0 and d.dynamic]
            if dyn:
                hint = "x".join(_hint_dim(ax, d) for ax, d in enumerate(g.dims))
                raise InputError(f"input '{g.name}' of {Path(model_path).name} has dynamic dim(s) "
                                 f"{[g.dims[ax].name for ax in dyn]} of unknown size: pass --input "
                                 f"{g.name}:{g.dtype}:{hint} (your sizes) or --data EVAL.npz")
            s = g
        if s.dims and not s.dims[0].dynamic:  # a fixed batch (1, or -1 stored as 1) still holds samples
            s = replace(s, dims=(Dim(1, 1, max(32, s.dims[0].opt), name="batch"), *s.dims[1:]))
        out.append(s)
    return tuple(out)


def _hint_dim(ax: int, d: Any) -> str:
    if not d.dynamic:
        return str(d.opt)
    if ax == 0:
        return "batch"
    # graph names like '?' or 'p2o.DynamicDimension.1' are not --input dim names
    name = d.name if d.name and re.fullmatch(r"[A-Za-z_]\w*", d.name) else f"d{ax}"
    return f"{name}=16..128"


def random_feeds(specs: Sequence[Any], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs with ``n`` samples on axis 0 (see :func:`trtopt.inputs.random_feeds`).

    Takes :class:`trtopt.inputs.InputSpec` (value ranges respected: token ids below the embedding
    rows, masks ones) or a runner's input specs (``name``, ``shape``, ``dtype``; integers then get
    ones, a valid index of any table).

    Raises:
        InputError: A non-batch dimension is dynamic (its size is unknown without data or ``--input``).
    """
    from trtopt.inputs import DTYPES, Dim, InputSpec
    from trtopt.inputs import random_feeds as feeds_of

    conv = []
    for s in specs:
        if isinstance(s, InputSpec):
            conv.append(s)
            continue
        if not s.shape:
            raise InputError(f"the shape of input '{s.name}' is unknown: pass --data EVAL.npz")
        if any(not isinstance(d, int) or d < 0 for d in list(s.shape)[1:]):
            raise InputError(f"input '{s.name}' has dynamic dimensions {list(s.shape or [])}: pass --input "
                             f"{s.name}:DTYPE:batchxseq=16..128 or --data EVAL.npz")
        dtype = next((k for k, v in DTYPES.items() if np.dtype(v) == np.dtype(s.dtype)), None)
        if dtype is None:
            raise InputError(f"input '{s.name}' has dtype {s.dtype}, which random feeds cannot fill: pass --data")
        dims = tuple(Dim(1, 1, 32, name="batch") if ax == 0 else Dim(d, d, d) for ax, d in enumerate(s.shape))
        conv.append(InputSpec(s.name, dtype, dims))
    return feeds_of(conv, n, seed=seed)


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
                 reference: Any, metric: Any, label: str, judged: bool = True, reference_name: str | None = None
                 ) -> Any:
    """Check batch sizes and inputs, then evaluate accuracy/fidelity of one active runner.

    ``judged=False`` reports the fidelity to ``reference`` (the outputs of ``reference_name``) without
    checking it against a tolerance.
    """
    check_batches(runner, cfg.batch_sizes, label)
    runner.check_inputs(_batch_of(data, 1 if fixed_batch(runner) is None else fixed_batch(runner)))
    return evaluate(runner, data, labels=labels, reference=reference, batch_size=cfg.effective_eval_batch_size,
                    metric=metric, tolerances=cfg.output_tolerances(), judged=judged, reference_name=reference_name)


def bench_one(runner: Any, name: str, precision: str, sparsity: str, artifact: str, cfg: BenchConfig,
              data: Mapping[str, np.ndarray], labels: np.ndarray | None, reference: Any, metric: Any
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


def _check_references(references: Mapping[str, str], names: list[str]) -> None:
    """Each ``variant=reference`` pair names models of this run, the reference given before the variant.

    Raises:
        ConfigError: Unknown names, or a reference that comes later (its outputs are not known yet).
    """
    from trtopt.errors import ConfigError

    for variant, ref in references.items():
        if variant not in names:
            raise ConfigError(f"--reference {variant}={ref}: no model named '{variant}' (models: {', '.join(names)})")
        if ref == "none":
            continue
        if ref not in names or names.index(ref) >= names.index(variant):
            raise ConfigError(f"--reference {variant}={ref}: the reference must be a model given before "
                              f"'{variant}' (models in order: {', '.join(names)}), or 'none'")


def _check_output_names(models: Sequence[str | os.PathLike[str]], cfg: BenchConfig) -> bool:
    """Check ``--regression-output`` / per-output tolerance names against the first model's outputs.

    Done before any evaluation when the first model is an ``.onnx`` file (read without its weights).

    Returns:
        Whether the names were checked (``False``: the first model is not ONNX; check after it ran).

    Raises:
        ConfigError: A name that is not an output of the first model.
    """
    first = str(models[0]) if models else ""
    if not first.endswith(".onnx"):
        return False
    from trtopt.onnx_graph import load_graph_only

    names = [o.name for o in load_graph_only(first).graph.output]
    check_tolerance_names(cfg.output_tolerances(), names)
    for m in models[1:]:  # every model is compared output by output with the first: the names must match
        if str(m).endswith(".onnx") and Path(m).is_file():
            other = [o.name for o in load_graph_only(m).graph.output]
            if sorted(other) != sorted(names):
                raise InputError(f"{m} has outputs {other} but the first model {first} (the fidelity reference) has "
                                 f"{names}: export them with the same output names (--output-name)")
    return True


def _unique_names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem if p.endswith((".onnx", ".pt")) or os.sep in p else p for p in paths]
    out = []
    for i, s in enumerate(stems):
        n = stems[:i].count(s)
        out.append(s if n == 0 else f"{s}-{n + 1}")
    return out


def compared_title(names: Sequence[str], limit: int = 4) -> str:
    """The report's title: the models compared (``fp32 vs fp16 vs int8``; more than ``limit``: ``... + N more``)."""
    shown = list(names) if len(names) <= limit else [*names[:limit - 1], f"{len(names) - limit + 1} more"]
    return " vs ".join(shown)


def bench_models(models: Sequence[str | os.PathLike[str]], backends: Sequence[str], cfg: BenchConfig, *,
                 data: Mapping[str, np.ndarray] | None = None, labels: np.ndarray | None = None,
                 metric: str = "top1", num_samples: int = 64, runner_kwargs: Mapping[str, Any] | None = None,
                 progress: Progress | None = None, input_specs: Sequence[Any] = (),
                 references: Mapping[str, str] | None = None) -> Report:
    """Benchmark every model on every backend at every batch size.

    Args:
        models: ONNX files (or, for the torch backend, what :class:`TorchRunner` accepts).
        backends: Backend names; one that is not installed yields ``skipped`` rows with the reason.
        cfg: Timing settings and batch sizes.
        data: Evaluation inputs by name, or ``None`` for random inputs.
        labels: Labels for the task metric.
        metric: Task metric: a built-in name (used only with labels) or ``package.module:function``
            (needs labels; see :mod:`trtopt.benchmark.metric`).
        num_samples: Random evaluation samples when ``data`` is ``None``.
        input_specs: :class:`trtopt.inputs.InputSpec` declarations (``--input``) for random feeds:
            sizes of dynamic dims and value ranges, checked against each ONNX model.
        runner_kwargs: Backend name to keyword arguments for :func:`open_runner`.
        references: Variant name -> the earlier variant whose outputs it is judged against (default:
            the first model), or ``"none"``: fidelity to the first model reported, not judged (a 2:4-pruned
            model is a different model than the dense one: its task metric says whether pruning worked,
            and its INT8 variant is judged against it: ``{"sparse24-fp32": "none",
            "sparse24-int8": "sparse24-fp32"}``).
        progress: ``progress(stage, detail)`` callback.

    Returns:
        The finalized report.

    Raises:
        InputError: Bad model, data or batch size; MissingDependencyError when no backend is available.
    """
    from trtopt.backends import open_runner
    from trtopt.refs import is_import_ref

    if labels is None and isinstance(metric, str) and is_import_ref(metric):
        raise InputError(f"metric '{metric}' needs labels: pass --data EVAL.npz holding a 'labels' array "
                         "(see docs/data-format.md)")
    task = get_metric(metric) if labels is not None else None  # a bad reference fails before any work
    progress = progress or (lambda _s, _d: None)
    variants: list[VariantResult] = []
    reference, reference_name, unavailable = None, None, {}
    outputs_of: dict[tuple[str, str], Any] = {}
    names = _unique_names([str(m) for m in models])
    references = dict(references or {})
    _check_references(references, names)
    names_checked = _check_output_names(models, cfg)  # whatever the number of models: a typo is never ignored
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
                    err = missing_dependency(backend, backend if backend.startswith("tensorrt") else None,
                                             f"trtopt has no {backend} runner in this build")
                    unavailable[backend] = err
                    variants += _skipped(name, backend, precision, sparsity, cfg, path, str(err))
                    continue
                except (MissingDependencyError, BackendUnavailableError) as exc:
                    unavailable[backend] = exc
                    variants += _skipped(name, backend, precision, sparsity, cfg, path, str(exc))
                    continue
                stack.callback(runner.__exit__, None, None, None)
                feeds = data if data is not None else random_feeds(
                    bench_specs(path, input_specs) if path.endswith(".onnx") else runner.input_specs(), num_samples)
                ref_name = references.get(name)
                ref, compared = reference, reference_name
                if ref_name not in (None, "none") and (backend, ref_name) in outputs_of:
                    ref, compared = outputs_of[(backend, ref_name)], ref_name
                acc = evaluate_one(runner, cfg, feeds, labels, ref, task or metric, f"'{path}'",
                                   judged=ref_name != "none", reference_name=compared)
                outputs_of[(backend, name)] = acc.all_outputs
                rows = [VariantResult(name, runner.backend, precision, sparsity, bs, None, acc, path, "ok", "",
                                      extra={"runner": runner.describe()}) for bs in cfg.batch_sizes]
                overflow = fp16_overflow_reason(path, data) if backend == "onnxruntime" and data is not None else ""
                if overflow:  # ONNX Runtime's CPU scored it in float32 kernels; FP16 hardware would not
                    rows = [replace(r, status="failed", reason=overflow) for r in rows]
                else:
                    timed.append((len(variants), runner, f"{name} ({backend})", feeds))
                if not names_checked:  # not an .onnx first model: its outputs are known once it ran
                    check_tolerance_names(cfg.output_tolerances(), list(acc.all_outputs))
                    names_checked = True
                if reference is None:  # the first model on the first backend: every later one's default reference
                    reference, reference_name = acc.all_outputs, f"{name} ({backend})" if len(backends) > 1 else name
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
    workload = {"name": compared_title(names), "models": [str(m) for m in models],
                **({} if data is not None else {"description": RANDOM_INPUTS_NOTE}),
                "data": "given" if data is not None else "random inputs: throughput and fidelity only",
                "labels": labels is not None, "reference": "first model (fidelity baseline)",
                **({"references": references} if references else {})}
    return Report(environment=capture_environment(), workload=workload, variants=variants).finalize()


def layerwise_all(models: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                  data: Mapping[str, np.ndarray] | None = None, num_samples: int = 32,
                  input_specs: Sequence[Any] = ()) -> dict[str, list[Any]]:
    """Compare every later ONNX model layer by layer with the first; write ``layerwise/<name>.json``.

    Args:
        models: ONNX files, reference (FP32) first.
        out_dir: Report folder.
        data: Inputs (the first ``num_samples`` are used), or ``None`` for random inputs.
        num_samples: Samples to compare on.
        input_specs: ``--input`` declarations for random inputs (see :func:`bench_specs`).

    Returns:
        Model name to its ranked :class:`~trtopt.benchmark.layerwise.LayerError` list.
    """
    from trtopt.benchmark.layerwise import compare_layers
    from trtopt.fileio import atomic_write_json

    paths = [str(m) for m in models if str(m).endswith(".onnx")]
    if len(paths) < 2:
        raise InputError("layer-wise comparison needs the FP32 model and at least one more .onnx model")
    if data is None:
        data = random_feeds(bench_specs(paths[0], input_specs), num_samples)
    feeds = {k: np.ascontiguousarray(v[:num_samples]) for k, v in data.items()}
    results = {}
    for path, name in zip(paths[1:], _unique_names(paths)[1:]):
        layers = compare_layers(paths[0], path, feeds)
        atomic_write_json(Path(out_dir) / "layerwise" / f"{name}.json",
                          {"reference": paths[0], "candidate": path, "ranked_by": "local_sqnr_db",
                           "samples": len(next(iter(feeds.values()))), "layers": [e.to_dict() for e in layers]})
        results[name] = layers
    return results
