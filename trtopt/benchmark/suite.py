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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.benchmark.accuracy import get_metric
from trtopt.benchmark.config import BenchConfig
from trtopt.benchmark.environment import capture_environment
from trtopt.benchmark.report import Report
from trtopt.benchmark.session import BenchSession, SessionEntry, check_references
from trtopt.errors import InputError
from trtopt.fileio import atomic_write_json
from trtopt.judge.generic import check_tolerance_names
from trtopt.refs import is_import_ref

Progress = Callable[[str, str], None]

#: report.md / report.json note of a run without evaluation data
RANDOM_INPUTS_NOTE = ("Random inputs drawn from the input specs (no evaluation data): throughput and fidelity only; "
                      "fidelity on random inputs can differ from real data.")


def describe_onnx(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Return ``(precision, sparsity)`` of an ONNX model file (see module docstring)."""
    from trtopt.onnx.io import load_onnx
    from trtopt.onnx.precision import computes_fp16, is_quantized
    from trtopt.sparsity.onnx_check import check_onnx_layers

    model = load_onnx(path, check=False)
    if is_quantized(model):
        precision = "int8"
    elif computes_fp16(model):  # whole graph: Constant-node weights, Casts, I/O, subgraphs
        precision = "fp16"
    else:
        precision = "fp32"
    _, summary = check_onnx_layers(model)
    sparse = summary["compliant"] > 0 and summary["compliant"] * 2 >= max(summary["eligible"], 1)
    return precision, "2:4" if sparse else "dense"


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
    from trtopt.onnx.io import load_onnx

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
    from trtopt.onnx.io import load_graph_only

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
    """Benchmark every model on every backend at every batch size, in one :class:`BenchSession`.

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
            the first model), or ``"none"`` (the session's reference policy:
            :func:`trtopt.benchmark.session.reference_for`; e.g. ``{"sparse24-fp32": "none",
            "sparse24-int8": "sparse24-fp32"}``, as a recipe judges its 2:4 variants).
        progress: ``progress(stage, detail)`` callback.

    Returns:
        The finalized report.

    Raises:
        InputError: Bad model, data or batch size; MissingDependencyError when no backend is available.
    """
    from trtopt.backends import open_runner

    if labels is None and isinstance(metric, str) and is_import_ref(metric):
        raise InputError(f"metric '{metric}' needs labels: pass --data EVAL.npz holding a 'labels' array "
                         "(see docs/data-format.md)")
    task = get_metric(metric) if labels is not None else None  # a bad reference fails before any work
    names = _unique_names([str(m) for m in models])
    references = dict(references or {})
    check_references(references, names)
    session = BenchSession(cfg, labels=labels, metric=task or metric, references=references, progress=progress)
    session.checked_outputs = _check_output_names(models, cfg)  # whatever the number of models: a typo is never ignored

    def feeds(path: str) -> Callable[[Any], Mapping[str, np.ndarray]]:
        if data is not None:
            return lambda _runner: data
        return lambda runner: random_feeds(bench_specs(path, input_specs) if path.endswith(".onnx")
                                           else runner.input_specs(), num_samples)

    entries = []
    for backend in backends:
        kwargs = dict((runner_kwargs or {}).get(backend, {}))
        for m, name in zip(models, names):
            path = str(m)
            precision, sparsity = describe_onnx(path) if path.endswith(".onnx") else ("fp32", "dense")
            if backend == "torch":
                precision, sparsity = kwargs.get("precision", "fp32"), "2:4" if kwargs.get("sparse24") else "dense"
            entries.append(SessionEntry(name, backend, path, precision, sparsity, feeds=feeds(path),
                                        open=lambda b=backend, p=path, kw=kwargs: open_runner(b, p, **kw),
                                        evaluation_data=data is not None))
    variants = session.run(entries)
    if len(session.unavailable) == len(set(backends)):
        raise next(iter(session.unavailable.values()))
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
