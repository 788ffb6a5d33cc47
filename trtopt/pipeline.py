"""The recipe pipeline: workload -> prune -> export -> calibrate -> Q/DQ / FP16 -> bench -> report.

Each stage is one call into its module; this file only sequences them, names artifacts and
records what happened. A variant whose preparation or run fails is reported as ``failed``
with the reason rather than aborting the whole run; configuration errors abort up front.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trtopt.backends import open_runner
from trtopt.benchmark.accuracy import get_metric
from trtopt.benchmark.environment import capture_environment
from trtopt.benchmark.report import Report, VariantResult
from trtopt.benchmark.session import BenchSession, SessionEntry
from trtopt.benchmark.write import write_report
from trtopt.errors import ConfigError, InputError, TrtoptError
from trtopt.inputs import check_batch_sizes
from trtopt.judge.generic import check_tolerance_names
from trtopt.log import get_logger
from trtopt.models.load import load_workload
from trtopt.recipe import VARIANTS, Recipe
from trtopt.run.engines import engine_column, runner_options

if TYPE_CHECKING:
    from trtopt.models.workload import Workload

log = get_logger(__name__)

#: progress callback: (stage, detail) -> None
Progress = Callable[[str, str], None]


@dataclass
class PipelineResult:
    """What a pipeline run produced.

    Attributes:
        report: The benchmark report.
        paths: Written files (``report.json``, ``report.md``, plots, models, tables).
        stage_seconds: Wall time per stage.
    """

    report: Report
    paths: dict[str, Path] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def recipe_references(variants: tuple[str, ...]) -> dict[str, str]:
    """The session ``references`` of a recipe (:func:`trtopt.benchmark.session.reference_for`).

    A 2:4 variant's quantization is judged against the pruned FP32 model (same weights); the pruned
    FP32 model itself is a different model than the dense one, so its fidelity to ``fp32`` is reported,
    not judged: its accuracy delta is what tells whether pruning and fine-tuning worked.
    """
    refs = {v: "none" if v == "sparse24-fp32" else "sparse24-fp32" for v in variants if VARIANTS[v].sparse}
    # a structured / low-rank model likewise: its INT8 is judged against its own FP32 graph
    return refs | {v: "none" if VARIANTS[v].precision == "fp32" else f"{VARIANTS[v].kind}-fp32"
                   for v in variants if VARIANTS[v].shrink}


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class Pipeline:
    """Run a :class:`~trtopt.recipe.Recipe` end to end.

    Args:
        recipe: The parsed recipe.
        out_dir: Output folder (models, calibration tables, report).
        progress: Optional callback receiving ``(stage, detail)`` as work proceeds.
    """

    def __init__(self, recipe: Recipe, out_dir: str | Path, progress: Progress | None = None) -> None:
        self.recipe = recipe
        self.out = Path(out_dir)
        self.progress = progress or (lambda stage, detail: log.info("%s: %s", stage, detail))
        self.models_dir = self.out / "models"
        self.calib_dir = self.out / "calibration"
        self.timings: dict[str, float] = {}
        self.notes: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        self.skipped: dict[str, str] = {}

    def _stage(self, name: str, detail: str, fn: Callable[[], object]) -> object:
        self.progress(name, detail)
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        return result

    # -- stages --------------------------------------------------------------------
    def _torch_models(self, workload) -> dict[str, object]:
        if workload.onnx_path is not None:  # the user's .onnx: nothing to prune, fine-tune or export
            from trtopt.models.user import ONNX_NOTE

            self.notes["onnx"] = ONNX_NOTE
            return {}
        models = {"dense": workload.model}
        for method in self.recipe.run.shrinks:
            self._shrink(workload, method, models)
        if not self.recipe.run.needs_sparse:
            return models
        from trtopt.sparsity import finetune_masked
        from trtopt.sparsity.api import prune

        sparse = copy.deepcopy(workload.model)
        calib = workload.as_feeds(workload.calib)  # forward-argument order (the specs' order)
        report = self._stage("prune", f"2:4 {self.recipe.prune.method}",
                             lambda: prune(sparse, self.recipe.prune, calib))
        pruned = [ly for ly in report.layers if getattr(ly, "pruned", False)]
        self.notes["prune"] = {"method": self.recipe.prune.method, "pruned_layers": len(pruned),
                               "layers": len(report.layers)}
        ft = self.recipe.finetune
        if ft is not None and (workload.train_x is not None or ft.data is not None):
            from trtopt.torch_util import torch_threads

            teacher = workload.model if ft.distill_alpha is not None or ft.loss == "kd" else None
            detail = f"masked fine-tune, {ft.epochs} epochs" + (" + distillation" if teacher is not None else "")
            with torch_threads(1):
                hist = self._stage("finetune", detail,
                                   lambda: finetune_masked(sparse, report, workload.train_x, workload.train_y, ft,
                                                           teacher=teacher))
            self.notes["finetune"] = {"epochs": ft.epochs, "loss": getattr(hist, "loss_name", None),
                                      "final_loss": round(hist[-1]["loss"], 6) if hist else None,
                                      "masks_intact": getattr(hist, "masks_intact", None)}
        models["sparse"] = sparse.eval()
        return models

    def _shrink(self, workload, method: str, models: dict[str, object]) -> None:
        """The ``pruned`` (structured) or ``lowrank`` model; losing the task (``max_drop``) fails its variants."""
        from trtopt.pruning import TaskData
        from trtopt.pruning.api import prune_dense
        from trtopt.torch_util import torch_threads

        cfg, model = getattr(self.recipe, method), copy.deepcopy(workload.model)
        try:
            with torch_threads(1):
                res = self._stage("prune", f"{method}, {self.recipe.schedule.steps} step(s)", lambda: prune_dense(
                    model, cfg, workload.as_feeds(workload.example), self.recipe.schedule, TaskData.of(workload)))
            self.notes[f"prune_{method}"] = res.to_dict()
            why = (f"the {method} model lost the task: {res.metric_name} {res.metric_final:.2f} vs dense "
                   f"{res.metric_dense:.2f} (more than max_drop {res.max_drop:g})") if res.failed else ""
        except InputError as exc:  # e.g. no layer to factorize: the variants fail, not the run
            why = str(exc)
        for v in (v for v in self.recipe.run.variants if VARIANTS[v].shrink == method and why):
            self.failed[v] = why
        if not why:
            models["pruned" if method == "structured" else method] = model.eval()

    def _export(self, workload, models: dict[str, object]) -> dict[str, Path]:
        from dataclasses import replace

        import torch

        from trtopt.export import ExportConfig, export_onnx, export_with_specs

        if workload.onnx_path is not None:
            return {"dense": workload.onnx_path}
        cfg = self.recipe.export
        if workload.specs is not None:  # a user's model: names, example inputs and dynamic axes from its specs
            cfg = replace(cfg, output_names=workload.outputs)
            return {
                kind: self._stage("export", f"{kind} FP32 -> ONNX",
                                  lambda m=m, kind=kind: export_with_specs(m, workload.specs,
                                                                           self.models_dir / f"{kind}-fp32.onnx", cfg))
                for kind, m in models.items()
            }
        example = workload.as_feeds(workload.example)
        if cfg.input_names == ExportConfig().input_names:  # a built-in workload: its own input and output names
            cfg = replace(cfg, input_names=tuple(example), output_names=(workload.output_name,))
        sample = tuple(torch.from_numpy(example[n]) for n in cfg.input_names)
        return {
            kind: self._stage("export", f"{kind} FP32 -> ONNX",
                              lambda m=m, kind=kind: export_onnx(m, sample, self.models_dir / f"{kind}-fp32.onnx",
                                                                 cfg))
            for kind, m in models.items()
        }

    def _calibrate(self, workload, fp32: dict[str, Path]) -> dict[str, object]:
        from trtopt.calib import NumpySource, calibrate

        tables = {}
        needs = {VARIANTS[v].kind for v in self.recipe.run.variants
                 if VARIANTS[v].precision == "int8" and v not in self.skipped and v not in self.failed}
        for kind in sorted(needs):
            src = NumpySource(workload.as_feeds(workload.calib), batch_size=32, seed=self.recipe.workload.seed)
            detail = f"{kind}: {self.recipe.calibrate.method} on {workload.count(workload.calib)} samples"
            table = self._stage("calibrate", detail,
                                lambda kind=kind, src=src: calibrate(fp32[kind], src, self.recipe.calibrate))
            table.save_json(self.calib_dir / f"{kind}.calib.json")
            table.write_trt_cache(self.calib_dir / f"{kind}.calib.cache", trt_version=100300)
            tables[kind] = table
        return tables

    def _variant_model(self, variant: str, fp32: dict[str, Path], tables: dict[str, object]) -> Path:
        from dataclasses import replace

        from trtopt.onnx.io import save_onnx
        from trtopt.quant import CalibData, quantize

        var = VARIANTS[variant]
        kind = var.kind
        if var.precision == "fp32":
            return fp32[kind]
        dest = self.models_dir / f"{variant}.onnx"
        # calibration data drives the FP16 data rule and overflow preview, and the INT8 fidelity guard
        # (never an INT8 variant that misses the bench tolerance on calibration data)
        data = CalibData(self.workload.as_feeds(self.workload.calib), seed=self.recipe.workload.seed)
        if var.precision == "fp16":
            res = quantize(fp32[kind], None, self.recipe.fp16, data)
        else:
            qcfg = replace(self.recipe.quantize, fp16_rest=True) if var.fp16_rest else self.recipe.quantize
            res = quantize(fp32[kind], tables[kind], qcfg, data, tolerance=self.recipe.bench.output_tolerances(),
                           kinds=self.recipe.bench.declared_kinds())
            if res.guard is not None:
                self.notes.setdefault("fidelity_guard", {})[variant] = {
                    "samples": res.guard.samples, "violations_all_int8": res.guard.violations_all,
                    "kept_nodes": res.guard.kept_nodes}
        model = res.model
        return save_onnx(model, dest)

    def prepare(self, workload: Workload) -> dict[str, Path]:
        """Run the preparation stages (prune, export, calibrate, quantize) for ``workload``; no benchmark.

        Returns:
            Variant name -> its ONNX graph (the graphs ``run`` benchmarks). Variants that could not be
            made are in :attr:`failed` (name -> reason), those that do not apply in :attr:`skipped`.
        """
        self.workload = workload
        models = self._torch_models(workload)
        self.torch_models = models
        fp32 = self._export(workload, models)
        if workload.onnx_path is not None:
            from trtopt.models.user import ONNX_NOTE

            for v in self.recipe.run.variants:
                if VARIANTS[v].sparse or VARIANTS[v].shrink:
                    self.skipped[v] = f"{ONNX_NOTE}; pruned variants need the PyTorch model"
        tables = self._calibrate(workload, fp32)
        artifacts: dict[str, Path] = {}
        for v in self.recipe.run.variants:
            if v in self.skipped or v in self.failed:
                continue
            try:
                artifacts[v] = self._stage("quantize", f"{v} model", lambda v=v: self._variant_model(v, fp32, tables))
            except TrtoptError as exc:
                self.failed[v] = str(exc)
        return artifacts

    def _open(self, variant: str, path: Path, workload):
        """Open the runner for a variant on the recipe's backend."""
        if self.recipe.run.backend != "torch":
            return open_runner(self.recipe.run.backend, path, **runner_options(
                self.recipe.run.backend, variant, getattr(self.workload, "specs", None), self.out / "engines"))
        from trtopt.backends.torch_runner import TorchRunner

        var = VARIANTS[variant]
        if var.precision == "int8" or var.fp16_rest:
            raise ConfigError("PyTorch eager has no INT8 path in trtopt; run INT8 variants on onnxruntime or tensorrt")
        model = self.torch_models[var.kind]
        inputs = tuple(workload.as_feeds(workload.example))
        # 2:4 semi-structured kernels exist on CUDA only; on CPU the sparse model runs dense.
        return TorchRunner(model, precision=var.precision, sparse24=var.sparse and _cuda_available(),
                           input_names=inputs, output_names=workload.outputs)

    def _attach_engine(self, variant: str, path: Path, results: list[VariantResult]) -> None:
        """ONNX Runtime runs: also build the variant ahead of time for RTX GPUs, for the engine column."""
        if self.recipe.run.backend != "onnxruntime":
            return
        cell = self._stage("engine", f"{variant}: TensorRT-RTX ahead-of-time build",
                           lambda: engine_column(self.recipe.run.name, variant, path, self.out / "engines",
                                                 getattr(self.workload, "specs", None)))
        for r in results:
            r.engine = cell

    def _check_metric(self, workload) -> None:
        """Check the ``[bench]`` table against the model before any stage writes.

        ``regression_outputs`` must name outputs of the model, and ``metric`` must resolve (a user
        metric needs labels in ``eval_data``).
        """
        check_tolerance_names(self.recipe.bench.output_tolerances(), list(workload.outputs))
        check_batch_sizes(getattr(workload, "specs", None) or (), self.recipe.bench.batch_sizes,
                          "[bench] batch_sizes", "workload.inputs")
        metric = get_metric(self.recipe.bench.metric)
        if not metric.builtin and workload.eval_y is None:
            raise ConfigError(f"[bench] metric = '{metric.ref}' needs labels: give [workload] eval_data with a "
                              "'labels' array")

    def run(self) -> PipelineResult:
        """Run every stage and write the report.

        Returns:
            The report, written paths and per-stage wall times.

        Raises:
            TrtoptError: A user error (bad model, data, metric, configuration). On any error or Ctrl-C
                the output folder is left as it was before the run (:class:`trtopt.artifacts.RunOutput`):
                what the run wrote is removed and an earlier run's artifacts are put back; after a
                successful run it holds this run's artifacts only.
        """
        from trtopt.artifacts import RunOutput
        from trtopt.fileio import check_writable

        check_writable(self.out, folder=True)  # before minutes of training and calibration, not after
        w = self.recipe.workload
        inputs = [getattr(w, k, None) for k in ("model", "weights", "calib_data", "eval_data", "train_data")]
        with RunOutput(self.out, self._artifact_names(), ("models", "calibration", "engines"), inputs=inputs):
            return self._run()

    @staticmethod
    def _artifact_names() -> list[str]:
        """Every file a run may write under its output folder (the names ``_run`` and its stages use)."""
        from trtopt.benchmark.plots import PLOT_FILES

        kinds = ("dense", "sparse", "pruned", "lowrank")
        models = [f"{k}-fp32.onnx" for k in kinds] + [f"{v}.onnx" for v in VARIANTS]
        return (["report.json", "report.md", *PLOT_FILES.values()]
                + [f"models/{m}{ext}" for m in models for ext in ("", ".data")]
                + [f"calibration/{k}.calib.{ext}" for k in kinds for ext in ("json", "cache")])

    def _entries(self, workload: Workload, artifacts: dict[str, Path]) -> list[SessionEntry]:
        """What the benchmark session measures: every recipe variant, in order (fp32 first: the baseline)."""
        out = []
        for v in self.recipe.run.variants:
            var = VARIANTS[v]
            row = {"name": v, "backend": self.recipe.run.backend, "precision": var.precision,
                   "sparsity": var.sparsity}
            if v in self.skipped or v not in artifacts:
                why = ("skipped", self.skipped[v]) if v in self.skipped else ("failed", self.failed.get(v, "not built"))
                out.append(SessionEntry(**row, artifact=None, not_run=why))
                continue
            out.append(SessionEntry(**row, artifact=str(artifacts[v]), extra={"fp16_rest": var.fp16_rest},
                                    open=lambda v=v: self._open(v, artifacts[v], workload),
                                    feeds=lambda _runner: workload.as_feeds(workload.eval_x)))
        return out

    def _run(self) -> PipelineResult:
        workload = self._stage("workload", f"prepare {self.recipe.workload.model}",
                               lambda: load_workload(self.recipe.workload))
        self._check_metric(workload)
        artifacts = self.prepare(workload)
        session = BenchSession(self.recipe.bench, labels=workload.eval_y, metric=self.recipe.bench.metric,
                               references=recipe_references(self.recipe.run.variants), progress=self.progress,
                               failures=(TrtoptError,))
        session.checked_outputs = True  # _check_metric checked the tolerance names against the workload
        with session:  # runners stay open: all variants are timed together, interleaved
            variants = self._stage("bench", f"{len(artifacts)} variant(s) on {self.recipe.run.backend}",
                                   lambda: session.evaluate(self._entries(workload, artifacts)))
            timed = [r for r in variants if r.status == "ok"]
            if session.pending:
                self._stage("timing", f"{session.pending} variant(s) in interleaved rounds", session.time)
        for v in dict.fromkeys(r.name for r in timed):
            self._attach_engine(v, artifacts[v], [r for r in timed if r.name == v])
        info = {**workload.info(), "recipe": self.recipe.run.name, "stages": self.notes,
                "stage_seconds": {k: round(v, 2) for k, v in self.timings.items()}}
        report = Report(environment=capture_environment(), workload=info, variants=variants)
        report.finalize()
        paths = self._stage("report", str(self.out), lambda: write_report(report, self.out))
        return PipelineResult(report=report, paths=dict(paths), stage_seconds=dict(self.timings))


def run_recipe(recipe: str | Path | dict | Recipe, out: str | Path | None = None,
               progress: Progress | None = None) -> PipelineResult:
    """Load (when needed) and run a recipe: the one-call Python API.

    Args:
        recipe: A ``.toml`` path, a dict of tables (as :func:`trtopt.recipe.recipe_from_dict` takes;
            relative paths relative to the current folder) or a parsed :class:`~trtopt.recipe.Recipe`.
        out: Output folder; default ``[recipe] out`` or ``runs/<recipe name>``.
        progress: Optional ``(stage, detail)`` callback.

    Returns:
        The :class:`PipelineResult` (report, written paths, stage seconds).

    Raises:
        ConfigError / InputError: A bad recipe, model or data file (before any stage writes a file).
    """
    from trtopt.recipe import load_recipe, recipe_from_dict

    if isinstance(recipe, dict):
        rec = recipe_from_dict(recipe)
    elif isinstance(recipe, Recipe):
        rec = recipe
    else:
        rec = load_recipe(recipe)
    dest = Path(out) if out is not None else Path(rec.run.out or Path("runs") / rec.run.name)
    return Pipeline(rec, dest, progress=progress).run()
