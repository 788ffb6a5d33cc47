"""The user's own model as a recipe workload: model reference + input specs + ``.npz`` data.

``[workload] model`` names a factory (``pkg.mod:fn``), a ``torch.save``'d ``.pt`` or an ``.onnx``
(:class:`~trtopt.models.reference.ModelRef`); ``inputs`` declares the inputs
(:mod:`trtopt.inputs`); ``calib_data`` / ``eval_data`` / ``train_data`` are ``.npz`` files in the
one data format (:mod:`trtopt.dataset`). Without data files, calibration and evaluation use random
inputs drawn from the specs, and the report says so.

Everything is checked here, before any pipeline stage writes a file: the model imports/loads, its
forward runs on the declared inputs (or the specs agree with the ONNX graph), and every data file
reads and matches the specs. See ``docs/your-model.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trtopt.errors import ConfigError, InputError
from trtopt.models.workload import BUILTIN_WORKLOADS, Workload, WorkloadConfig

#: report note for an ONNX model (prefix of the skip reason of 2:4 variants)
ONNX_NOTE = "model given as ONNX: pruning, fine-tuning and export are skipped (they need the PyTorch model)"


def validate_config(cfg: WorkloadConfig) -> None:
    """Cheap checks of a user-model ``[workload]`` (no torch import): reference form, specs, files exist.

    Raises:
        ConfigError: Not a model reference, bad spec syntax, ``inputs`` missing for a PyTorch model.
        InputError: A named model, weights or data file is missing or is a folder.
    """
    from trtopt.inputs import parse_input_specs
    from trtopt.models.reference import ModelRef

    try:
        ref = ModelRef.parse(cfg.model, cfg.weights)
    except ConfigError as exc:
        raise ConfigError(f"workload.model: {exc} (or a built-in workload: {', '.join(sorted(BUILTIN_WORKLOADS))})"
                          ) from None
    if cfg.inputs:
        parse_input_specs(cfg.inputs)
    elif not ref.is_onnx:
        raise ConfigError(f"workload.inputs is required for the PyTorch model '{cfg.model}': one spec per forward "
                          "argument, e.g. inputs = [\"input:float32:batchx3x32x32\"] (see docs/your-model.md)")
    if ref.kind != "factory":
        _need_file(ref.value, "model")
    if ref.weights:
        _need_file(ref.weights, "weights")
    for key in ("calib_data", "eval_data", "train_data"):
        if getattr(cfg, key):
            _need_file(getattr(cfg, key), f"workload.{key}")


def _need_file(path: str, what: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}")


def _data(path: str, specs: tuple, what: str, need_labels: bool = False,
          ranges: bool = True) -> tuple[dict[str, np.ndarray], Any]:
    """Read a data ``.npz`` checked against the specs: ``(feeds in spec order, labels or None)``.

    ``ranges=False`` for specs read from an ONNX graph: a dim the graph leaves open takes any size.
    """
    from trtopt.dataset import load_npz

    ds = load_npz(path).check(specs, need_labels=need_labels, ranges=ranges)
    if ds.static:
        raise InputError(f"workload.{what} {path}: per-call constant ('static:') inputs {sorted(ds.static)} are not "
                         "supported in recipes yet; store them batched (samples on axis 0)")
    return {s.name: ds.inputs[s.name] for s in specs}, ds.labels


def _output_names(cfg: Any, n_outputs: int) -> tuple[str, ...]:
    if cfg.output_names:
        if len(cfg.output_names) != n_outputs:
            raise InputError(f"workload.output_names has {len(cfg.output_names)} name(s) {list(cfg.output_names)} "
                             f"but the model returns {n_outputs} output(s)")
        return tuple(cfg.output_names)
    return ("output",) if n_outputs == 1 else tuple(f"output_{i}" for i in range(n_outputs))


def _sized_by(specs: tuple, feeds: dict[str, np.ndarray]) -> tuple:
    """Specs whose open non-batch dims (read from a graph) take the data's size (for profiles and random feeds)."""
    from dataclasses import replace

    from trtopt.inputs import Dim

    out = []
    for s in specs:
        shape = feeds[s.name].shape
        dims = tuple(Dim(shape[ax], shape[ax], shape[ax], name=d.name) if ax > 0 and d.dynamic and d.max == 1 else d
                     for ax, d in enumerate(s.dims))
        out.append(replace(s, dims=dims))
    return tuple(out)


def _onnx_model(cfg: Any, path: str) -> tuple[tuple, tuple[str, ...]]:
    """Specs (declared and checked against the graph, or read from it) and output names of an ``.onnx``."""
    from trtopt.inputs import check_specs_against_onnx, parse_input_specs, specs_from_onnx
    from trtopt.onnx.io import load_onnx

    proto = load_onnx(path)
    from trtopt.onnx.ort_probe import probe_load

    failure = probe_load(path)  # calibration and the bench open it in ONNX Runtime: in a helper process first
    if failure is not None:
        raise InputError(f"{path}: {failure} (calibration and the ONNX Runtime bench open it this way)")
    graph_specs = specs_from_onnx(proto)
    if cfg.inputs:
        specs = parse_input_specs(cfg.inputs)
        check_specs_against_onnx(specs, proto, where="workload.inputs")
        missing = sorted({s.name for s in graph_specs} - {s.name for s in specs})
        if missing:
            raise InputError(f"workload.inputs: no spec for the model's input(s) {missing} (declare every input, "
                             "or none to read them from the graph)")
        order = [s.name for s in graph_specs]
        specs = tuple(sorted(specs, key=lambda s: order.index(s.name)))
    else:
        specs = graph_specs
        # a dynamic axis other than the batch has no known size: random inputs would guess 1
        unsized = [(s.name, ax, d.name) for s in specs for ax, d in enumerate(s.dims) if ax > 0 and d.dynamic]
        if unsized and not (cfg.calib_data and cfg.eval_data):
            name, ax, dim = unsized[0]
            spec = next(s for s in specs if s.name == name)
            dims = ["batch" if a == 0 and d.dynamic else str(d) if not d.dynamic else
                    f"{d.name if d.name and d.name.isidentifier() else f'd{a}'}=16..64..128"
                    for a, d in enumerate(spec.dims)]
            example = f"{name}:{spec.dtype}:{'x'.join(dims)}"
            raise InputError(f"{path}: input '{name}' axis {ax} ('{dim}') is dynamic with no known size: declare every "
                             f"input in workload.inputs with its range (e.g. \"{example}\") or give calib_data and "
                             "eval_data")
    outs = tuple(o.name for o in proto.graph.output)
    if cfg.output_names and tuple(cfg.output_names) != outs:
        raise InputError(f"workload.output_names {list(cfg.output_names)} differ from the ONNX model's outputs "
                         f"{list(outs)} (leave output_names out for an .onnx model)")
    return specs, outs


def load_user_workload(cfg: WorkloadConfig) -> Workload:
    """Build the :class:`~trtopt.models.workload.Workload` of a user's model (see the module docstring).

    Single-input models hold bare arrays (as the built-in workloads do), multi-input models dicts
    keyed by input name in spec (= ``forward``) order.

    Raises:
        InputError / ConfigError: See :func:`trtopt.models.load.load_workload`.
    """
    from trtopt.inputs import random_feeds
    from trtopt.models.reference import ModelRef, check_forward, load_model

    validate_config(cfg)
    ref = ModelRef.parse(cfg.model, cfg.weights)
    model, onnx_path = None, None
    if ref.is_onnx:
        specs, outs = _onnx_model(cfg, ref.value)
        onnx_path = Path(ref.value)
        kind = "ONNX model"
    else:
        from trtopt.inputs import parse_input_specs

        specs = parse_input_specs(cfg.inputs)
        model = load_model(ref)
        outs = _output_names(cfg, len(check_forward(model, specs, ref=f"model '{cfg.model}'", where="workload.inputs")))
        kind = "PyTorch factory" if ref.kind == "factory" else "torch.save'd module"
    notes: dict[str, str] = {}
    declared = not (ref.is_onnx and not cfg.inputs)  # specs read from the graph: the data sizes its open dims
    if cfg.calib_data:
        calib, _ = _data(cfg.calib_data, specs, "calib_data", ranges=declared)
        if not declared:
            specs = _sized_by(specs, calib)
        notes["calib"] = f"{Path(cfg.calib_data).name} ({len(next(iter(calib.values())))} samples)"
    else:
        calib = random_feeds(specs, cfg.num_calib, seed=cfg.seed)
        notes["calib"] = f"random inputs ({cfg.num_calib} samples drawn from the input specs)"
    eval_y = None
    if cfg.eval_data:
        eval_x, eval_y = _data(cfg.eval_data, specs, "eval_data", ranges=declared)
        notes["eval"] = (f"{Path(cfg.eval_data).name} ({len(next(iter(eval_x.values())))} samples, "
                         f"{'with labels' if eval_y is not None else 'no labels: fidelity only'})")
    else:
        eval_x = random_feeds(specs, cfg.num_eval, seed=cfg.seed + 1)
        notes["eval"] = (f"random inputs ({cfg.num_eval} samples drawn from the input specs): throughput and "
                         "fidelity vs FP32 only, no task accuracy")
    train_x = train_y = None
    if cfg.train_data:
        # labels are optional here: finetune.loss = "kd" distils from the dense model without them, and
        # finetune_masked names the missing labels when its loss needs them
        train_x, train_y = _data(cfg.train_data, specs, "train_data", ranges=declared)
        n = len(next(iter(train_x.values()))) if isinstance(train_x, dict) else len(train_x)
        notes["train"] = f"{Path(cfg.train_data).name} ({n} samples{'' if train_y is not None else ', no labels'})"
    single = len(specs) == 1

    def pack(feeds: dict[str, np.ndarray] | None) -> Any:
        return None if feeds is None else (next(iter(feeds.values())) if single else feeds)

    description = (f"your model {ref} ({kind}); inputs {', '.join(map(str, specs))}; calibration: {notes['calib']}; "
                   f"evaluation: {notes['eval']}" + (f"; training: {notes['train']}" if "train" in notes else ""))
    if ref.is_onnx:
        description += f". {ONNX_NOTE}"
    return Workload(
        name=Path(ref.value).stem if ref.kind != "factory" else ref.value,
        model=model, input_name=specs[0].name, output_name=outs[0],
        example=pack({k: v[:1] for k, v in eval_x.items()}), calib=pack(calib), eval_x=pack(eval_x),
        eval_y=eval_y, train_x=pack(train_x), train_y=train_y, description=description,
        extra={"model": str(ref), "model_kind": ref.kind, "input_specs": [str(s) for s in specs], "data": notes},
        specs=specs, output_names=outs, onnx_path=onnx_path,
    )
