"""``trtopt bench MODEL.onnx [MORE.onnx ...] --out DIR``: throughput, latency and accuracy vs FP32.

Writes DIR/report.json (schema trtopt.report/2), DIR/report.md and PNG plots (with matplotlib).
All models of a batch size are timed together in interleaved rounds; speedups carry 95 % intervals.
Put the FP32 model first: it is the fidelity reference. ``--data EVAL.npz`` holds the input
arrays by name and an optional ``labels`` array (docs/data-format.md); without it inputs are random
(throughput and fidelity only), drawn from the graph's input specs (token ids below the embedding
table's rows, masks ones) with ``--input`` giving sizes of dynamic dims and value ranges.
``--metric`` is a built-in name (top1, top5) or your function ``package.module:function`` taking
``(outputs: dict[str, ndarray], labels) -> float`` (see :mod:`trtopt.benchmark.metric`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from trtopt.cli.args import add_output_kind_arg, add_regression_output_arg, parse_output_kinds
from trtopt.cli.model_source import load_torch_workload

if TYPE_CHECKING:
    from trtopt.benchmark.report import Report

HELP = "benchmark ONNX models (throughput, latency, accuracy and fidelity vs the first model) into a report"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser("bench", help=HELP, description=HELP + ". Exit 2 on bad input.")
    p.add_argument("models", metavar="MODEL", nargs="+",
                   help="ONNX files, FP32 first (torch backend: a workload name such as digits_cnn, or a .pt file)")
    g = p.add_argument_group("what to run")
    g.add_argument("--backend", default="onnxruntime",
                   help="onnxruntime, tensorrt, torch, or a comma list; a missing backend is reported as skipped")
    g.add_argument("--batch", default="1", help="batch sizes, e.g. 1,8,32 (a sweep)")
    g.add_argument("--data", type=Path, default=None, metavar="EVAL.npz",
                   help="evaluation inputs by input name plus optional 'labels'")
    g.add_argument("--metric", default=None,
                   help="task metric: top1, top5 or your function package.module:function taking (outputs by "
                        "output name, labels) and returning a float; needs 'labels' in --data (default top1 when "
                        "labels exist)")
    g.add_argument("--input", dest="inputs", action="append", default=[], metavar="SPEC",
                   help="random inputs without --data: NAME:DTYPE:DIMS[:LOW..HIGH], e.g. "
                        "input_ids:int64:batchxseq=16..128:0..30522 (sizes of dynamic dims, value range); repeatable")
    g.add_argument("--min-sqnr", type=float, default=None, metavar="DB",
                   help="fidelity tolerance: flag outputs whose SQNR vs the first model is below DB (default: none)")
    g.add_argument("--min-agreement", type=float, default=None, metavar="PCT",
                   help="fidelity tolerance: flag outputs whose top-1 agreement (per sample, or per position "
                        "for [N, T, C] outputs) is below PCT percent (default 99; 0 accepts any)")
    g.add_argument("--min-cosine", type=float, default=None, metavar="COS",
                   help="fidelity tolerance: flag outputs whose cosine, or worst channel's cosine, is below COS "
                        "(default 0.99; -1 accepts any)")
    g.add_argument("--reference", action="append", default=[], metavar="VARIANT=REF",
                   help="judge VARIANT (a model's file stem) against the outputs of REF, a model given before it, "
                        "instead of the first model; VARIANT=none reports its fidelity to the first model without "
                        "judging it (a 2:4-pruned model is another model: sparse24-fp32=none "
                        "sparse24-int8=sparse24-fp32); repeatable")
    add_regression_output_arg(g)
    add_output_kind_arg(g)
    g.add_argument("--num-samples", type=int, default=None,
                   help="random samples without --data (default 64; with --data every sample is evaluated)")
    g.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default 0: ONNX "
                                                              "Runtime's choice)")
    g.add_argument("--device", default=None, help="torch backend: cpu or cuda (default: cuda when available)")
    g.add_argument("--precision", default=None, help="torch backend: fp32 (default), fp16 or bf16")
    g.add_argument("--sparse24", action="store_true", help="torch backend: 2:4 semi-structured Linear (CUDA)")
    t = p.add_argument_group("timing")
    t.add_argument("--warmup", type=int, default=10, help="warm-up iterations (default 10)")
    t.add_argument("--iterations", type=int, default=None, help="timed iterations (default: by duration)")
    t.add_argument("--min-duration", type=float, default=1.0, help="minimum timed seconds (default 1.0)")
    t.add_argument("--mode", default="auto", help="auto, cpu, gpu-e2e, gpu-no-transfer, cuda-graph")
    t.add_argument("--rounds", type=int, default=20,
                   help="interleaved rounds: the models of a batch size are timed round-robin, each getting "
                        "min-duration/rounds per round (default 20; fewer when an iteration does not fit, at least 5)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder for report.json / report.md / plots (required)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 (after writing the report) when a variant is outside its fidelity tolerance "
                        "(marked ✗), failed or was skipped (e.g. a backend that is not installed)")
    p.add_argument("--layerwise", action="store_true",
                   help="also compare every later ONNX model layer by layer with the first (ONNX Runtime, "
                        "intermediate tensors exposed) and rank layers by the error they add; writes "
                        "DIR/layerwise/NAME.json")
    p.add_argument("--top", type=int, default=None, help="layers to print per model with --layerwise (default 10)")
    p.set_defaults(func=run)


def _kinds(items: list[str]) -> dict[str, str]:
    """``--output-kind NAME=KIND[:options]`` items -> ``{NAME: "KIND[:options]"}`` (checked: one clear line)."""
    parse_output_kinds(items)
    return {name.strip(): spec.strip() for name, _, spec in (i.partition("=") for i in items)}


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt bench``."""
    from rich.console import Console

    from trtopt.backends import BACKENDS
    from trtopt.benchmark import BenchConfig, render_table, write_report
    from trtopt.benchmark.report import check_strict
    from trtopt.benchmark.suite import bench_models, layerwise_all, load_eval_data
    from trtopt.cli.args import parse_int_list
    from trtopt.errors import ConfigError, InputError
    from trtopt.inputs import check_batch_sizes, parse_input_specs

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ConfigError(f"unknown backend(s) {unknown or [args.backend]} (choose from {', '.join(BACKENDS)})")
    for m in args.models:
        if m.endswith(".onnx") and not Path(m).is_file():
            raise InputError(f"model file {m} is a directory" if Path(m).is_dir() else f"model file not found: {m}")
    if args.out is None:
        raise ConfigError("--out DIR is required (trtopt bench never writes to the current folder by default)")
    from trtopt.fileio import check_writable

    check_writable(args.out, folder=True)  # before the evaluation and timing, not after
    from trtopt.benchmark.plots import PLOT_FILES
    from trtopt.fileio import check_not_input

    check_not_input([args.out / n for n in ("report.json", "report.md", *PLOT_FILES.values())],
                    [*args.models, args.data])
    cfg = BenchConfig(warmup=args.warmup, iterations=args.iterations, min_duration_s=args.min_duration,
                      batch_sizes=tuple(parse_int_list(args.batch, "--batch")), mode=args.mode, rounds=args.rounds,
                      metric=args.metric or "top1", min_sqnr_db=args.min_sqnr, min_top1_agreement=args.min_agreement,
                      min_cosine=args.min_cosine, min_channel_cosine=args.min_cosine,
                      regression_outputs=tuple(args.regression_output), output_kinds=_kinds(args.output_kind))
    _refuse_ignored(args, backends)
    if args.num_samples is not None and args.num_samples <= 0:
        raise ConfigError(f"--num-samples must be positive, got {args.num_samples}")
    specs = parse_input_specs(args.inputs)
    check_batch_sizes(specs, cfg.batch_sizes)  # the recipe's check: a size outside the declared batch range
    data, labels = load_eval_data(args.data, args.models) if args.data else (None, None)
    if args.metric and labels is None:
        raise InputError(f"--metric {args.metric} needs labels: " + (
            f"{args.data} has no 'labels' array (add one: docs/data-format.md)" if args.data
            else "pass --data EVAL.npz holding the inputs and a 'labels' array (docs/data-format.md)"))
    torch_kw = {"precision": args.precision or "fp32", "sparse24": args.sparse24, "loader": load_torch_workload}
    if args.device:
        torch_kw["device"] = args.device
    kwargs = {"onnxruntime": {"intra_op_threads": args.threads or 0}, "torch": torch_kw}
    console = Console(stderr=True)
    report = bench_models(args.models, backends, cfg, data=data, labels=labels, metric=args.metric or "top1",
                          num_samples=args.num_samples or 64, runner_kwargs=kwargs, input_specs=specs,
                          references=_parse_references(args.reference),
                          progress=lambda s, d: console.print(f"[dim]{s}:[/] {d}"))
    if args.data:
        report.workload["data"] = str(args.data)
    paths = write_report(report, args.out, plots=not args.no_plots)
    from trtopt.benchmark.render import OPTIONAL_COLUMNS
    from trtopt.cli import tables

    out = tables.console()  # a terminal's width, or (piped, CI) the table's own: no cell is cut
    tables.print_table(out, render_table(report), OPTIONAL_COLUMNS)
    for kind, path in paths.items():
        out.print(f"[dim]{kind}:[/] {path}", soft_wrap=True)
    if args.layerwise:
        _print_layerwise(out, layerwise_all(args.models, args.out, data, input_specs=specs),
                         args.top or 10)
    hint = random_inputs_hint(report)  # random inputs: a fidelity failure may be the inputs, not the model
    if hint:
        console.print(f"hint: {hint}", markup=False, highlight=False, soft_wrap=True)
    if args.strict:
        check_strict(report)
    return 0


def _refuse_ignored(args: argparse.Namespace, backends: list[str]) -> None:
    """Options this combination would not use are an error (one line), never silently dropped."""
    from trtopt.cli.args import refuse_ignored

    data = args.data is not None
    refuse_ignored([
        (data and args.num_samples is not None, "--num-samples sets the number of random samples; with --data every "
                                                "sample of the file is evaluated: drop one of them"),
        (data and bool(args.inputs), "--input describes random inputs; with --data the file's arrays are fed as they "
                                     "are: drop one of them"),
        *((opt is not None and opt is not False and "torch" not in backends,
           f"{name} applies to the torch backend only (ONNX models carry their precision in the graph); add "
           "--backend torch or drop it") for name, opt in (("--precision", args.precision), ("--device", args.device),
                                                            ("--sparse24", args.sparse24))),
        (args.threads is not None and "onnxruntime" not in backends,
         "--threads sets ONNX Runtime's threads; it applies to --backend onnxruntime only"),
        (args.top is not None and not args.layerwise, "--top applies to --layerwise: add --layerwise or drop --top"),
    ])


#: printed when a bench run on random inputs has a variant outside its fidelity tolerance (INT8
#: calibrated on [0, 1] images, judged on standard-normal inputs, looks broken when it is not)
RANDOM_INPUTS_HINT = ("fidelity on random inputs can differ from real data: pass --data EVAL.npz, or "
                      "--input NAME:DTYPE:SHAPE:LOW..HIGH with the value range of real inputs")


def random_inputs_hint(report: Report) -> str | None:
    """:data:`RANDOM_INPUTS_HINT` when ``report`` ran on random inputs and a variant is outside its fidelity tolerance.

    Returns:
        The hint line, or ``None`` (evaluation data given, or every judged variant within tolerance).
    """
    if not str(report.workload.get("data", "")).startswith("random inputs"):
        return None  # evaluation data given (the CLI records its path there)
    bad = any(v.status == "ok" and v.accuracy is not None and (v.accuracy.fidelity_ok is False or v.accuracy.violations)
              for v in report.variants)
    return RANDOM_INPUTS_HINT if bad else None


def _parse_references(items: list[str]) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}`` with a one-line error for a malformed item."""
    from trtopt.errors import ConfigError

    out = {}
    for item in items:
        variant, sep, ref = item.partition("=")
        if not sep or not variant or not ref:
            raise ConfigError(f"--reference must be VARIANT=REF (or VARIANT=none), got '{item}'")
        out[variant] = ref
    return out


def _print_layerwise(console, results: dict, top: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    from trtopt.benchmark.layerwise import format_layers
    from trtopt.cli.tables import print_table

    for name, layers in results.items():
        table = Table(title=f"layer-wise vs first model: {name} (worst {min(top, len(layers))} of {len(layers)})")
        for col in ("node", "module", "op", "SQNR dB", "local SQNR dB", "cosine", "max abs err"):
            table.add_column(col)
        for row in format_layers(layers, top):
            table.add_row(*(escape(c) for c in row))
        print_table(console, table, ("module", "max abs err", "cosine", "SQNR dB"))
