"""``trtopt quantize``: explicit INT8 (Q/DQ), INT8 + FP16, or FP16 conversion of an ONNX model."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtopt.cli.args import add_model_arg, add_output_kind_arg, add_regression_output_arg, add_repair_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    p = sub.add_parser(
        "quantize", help="insert Q/DQ (INT8), INT8 + FP16, or convert to FP16",
        description="INT8: --calib TABLE.json (or a TensorRT .cache) inserts QuantizeLinear/DequantizeLinear "
                    "following TensorRT's placement rules. --fp16 converts to FP16 instead (graph I/O stays FP32). "
                    "--max-accuracy-drop keeps the most sensitive layers out of INT8 until the drop on --eval fits.")
    add_model_arg(p)
    g = p.add_argument_group("Mode")
    g.add_argument("--calib", type=Path, metavar="TABLE.json", help="calibration table (.json or TensorRT .cache)")
    g.add_argument("--fp16", action="store_true", help="FP16 conversion only (no INT8)")
    g.add_argument("--fp16-rest", action="store_true", help="INT8 + FP16 for everything not in INT8 (opset 19)")
    s = p.add_argument_group("Selection")
    s.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="node names to leave unquantized / in FP32 with --fp16 (repeatable): a glob matching the "
                        "whole name ('*/attention/*', '/fc*'), or re:REGEX searched in it; the same syntax as "
                        "`trtopt prune --exclude` (a regex without re: is refused with the re: spelling)")
    s.add_argument("--exclude-op-type", action="append", default=[], metavar="OP", help="op type to leave unquantized")
    s.add_argument("--per-tensor-weights", action="store_true", help="per-tensor weight scales (default per-channel)")
    s.add_argument("--smoothquant", type=float, default=0.0, metavar="ALPHA",
                   help="SmoothQuant strength in (0, 1] for MatMul/Gemm activations (transformers: ~0.8; "
                        "needs a table from `trtopt calibrate`); default off")
    s.add_argument("--calib-data", type=Path, metavar="CALIB.npz",
                   help="calibration data: the INT8 fidelity guard checks the result on it (default: the file "
                        "recorded in the table by `trtopt calibrate`); with --fp16/--fp16-rest also the data for "
                        "the keep-FP32 rules and the FP16 overflow preview")
    s.add_argument("--static-input", action="append", default=[], metavar="NAME",
                   help="input of --calib-data passed unchanged with every call (not samples on axis 0; default: "
                        "what `trtopt calibrate --static-input` recorded in the table)")
    s.add_argument("--no-fidelity-guard", action="store_true",
                   help="the guard is on by default: it judges the INT8 model against FP32, each output by its "
                        "kind (--output-kind), on --eval data or else the calibration data aiming at half the "
                        "allowed loss there (generic outputs: cosine >= 0.995, top-1 / per-position agreement >= "
                        "99.5%%, judged with its 95%% upper bound on small samples), and keeps the most sensitive "
                        "layers in float until it holds; this flag writes the all-INT8 model instead")
    add_regression_output_arg(s)
    add_output_kind_arg(s)
    add_repair_arg(p)
    b = p.add_argument_group("Accuracy budget")
    b.add_argument("--max-accuracy-drop", type=float, metavar="X",
                   help="allowed drop in points (top-1 %% with labels, else 100 x (1 - cosine to FP32))")
    b.add_argument("--eval", type=Path, metavar="EVAL.npz",
                   help="held-out inputs by name (+ optional 'labels'): the budget's data with --max-accuracy-drop, "
                        "else the fidelity guard judges on it against the tolerance itself (not the calibration "
                        "data against half of it)")
    b.add_argument("--report", type=Path, metavar="REPORT.json", help="write the budget report as JSON")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.onnx", help="output model")
    p.set_defaults(func=run)


def _load_npz(path: Path, model) -> tuple[dict, object, tuple[str, ...]]:
    """``--eval``: the one data format (:func:`trtopt.dataset.load_npz`): inputs, optional labels, static names.

    The whole file is checked against the model first: errors name the file and its arrays' shapes.
    """
    from trtopt.dataset import load_npz

    ds = load_npz(path).check_onnx(model)
    return ds.feeds(), ds.labels, tuple(ds.static)


def _table(path: Path, model):
    from trtopt.calib import CalibrationTable

    if path.suffix == ".json":
        return CalibrationTable.load_json(path)
    names = {t for n in model.graph.node for t in list(n.input) + list(n.output)} | {i.name for i in model.graph.input}
    return CalibrationTable.read_trt_cache(path, tensor_names=names)


def _check(args: argparse.Namespace) -> None:
    from trtopt.cli.args import parse_repair
    from trtopt.errors import ConfigError

    args.repair = None if args.repair is None else parse_repair(args.repair)

    if args.fp16 and (args.calib or args.fp16_rest):
        raise ConfigError("--fp16 converts to FP16 only; use --calib with --fp16-rest for INT8 + FP16")
    if not args.fp16 and args.calib is None:
        raise ConfigError("give --calib TABLE.json (INT8) or --fp16")
    if args.max_accuracy_drop is not None and args.eval is None:
        raise ConfigError("--max-accuracy-drop needs --eval EVAL.npz (the held-out data it measures on)")
    if args.fp16 and args.eval is not None:
        raise ConfigError("--eval applies to INT8 quantization (--calib), not to --fp16")
    if args.eval is not None and args.max_accuracy_drop is None and args.no_fidelity_guard:
        raise ConfigError("--eval is the fidelity guard's held-out data: it does not apply with --no-fidelity-guard")
    if args.fp16 and args.max_accuracy_drop is not None:
        raise ConfigError("--max-accuracy-drop applies to INT8 quantization (--calib)")
    if args.fp16 and args.smoothquant:
        raise ConfigError("--smoothquant applies to INT8 quantization (--calib)")
    from trtopt.cli.args import refuse_ignored

    budget = args.max_accuracy_drop is not None
    refuse_ignored([  # options this mode does not use: an error, never silently dropped
        *((args.fp16 and bool(given), f"{name} applies to INT8 quantization (--calib), not to --fp16")
          for name, given in (("--exclude-op-type", args.exclude_op_type), ("--per-tensor-weights",
                              args.per_tensor_weights), ("--no-fidelity-guard", args.no_fidelity_guard),
                              ("--regression-output", args.regression_output),
                              ("--output-kind", args.output_kind), ("--repair", args.repair))),
        *((budget and bool(given), f"{name} does not apply with --max-accuracy-drop (the budget measures on --eval, "
                                   "not with the fidelity guard): drop one of them")
          for name, given in (("--calib-data", args.calib_data), ("--static-input", args.static_input),
                              ("--no-fidelity-guard", args.no_fidelity_guard),
                              ("--regression-output", args.regression_output),
                              ("--output-kind", args.output_kind), ("--repair", args.repair))),
        (args.no_fidelity_guard and bool(args.output_kind), "--output-kind tells the fidelity guard how to judge "
                                                            "an output: it does not apply with --no-fidelity-guard"),
        (args.report is not None and not budget, "--report writes the accuracy-budget report: it needs "
                                                 "--max-accuracy-drop and --eval"),
    ])
    from trtopt.quant.config import exclude_to_regex

    exclude_to_regex(args.exclude)  # a bad pattern fails before the model is read
    from trtopt.cli.args import parse_output_kinds

    parse_output_kinds(args.output_kind)  # a bad declaration too


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt quantize``: parse, one :func:`trtopt.quant.quantize` call, print the result, save."""
    from trtopt.cli import tables
    from trtopt.fileio import atomic_write_json, check_writable
    from trtopt.onnx.graph import as_model
    from trtopt.onnx.io import save_onnx
    from trtopt.quant import Budget, FP16Config, QuantizeConfig, quantize
    from trtopt.quant.config import exclude_to_regex

    _check(args)
    err = tables.console(stderr=True, soft_wrap=True)  # never split node names mid-line
    model = as_model(args.model)
    inputs = [args.model, args.calib, args.calib_data, args.eval]
    check_writable(args.out, inputs=inputs)  # before minutes of work, not after
    if args.report:
        check_writable(args.report, inputs=[*inputs, args.out], what="--report")
    if args.fp16:
        data = _calib_data(args.calib_data, tuple(args.static_input), model) if args.calib_data else None
        with err.status("converting to FP16"):
            res = quantize(model, None, FP16Config(node_block_list=exclude_to_regex(args.exclude)), data)
        _print_fp16(err, res)
        print(save_onnx(res.model, args.out))
        return 0
    table = _table(args.calib, model)
    cfg = QuantizeConfig(exclude=tuple(args.exclude), exclude_op_types=tuple(args.exclude_op_type),
                         per_channel=not args.per_tensor_weights, fp16_rest=args.fp16_rest,
                         smoothquant_alpha=args.smoothquant, fidelity_guard=not args.no_fidelity_guard,
                         **({} if args.repair is None else {"repair": args.repair}))
    if args.max_accuracy_drop is not None:
        feeds, labels, static = _load_npz(args.eval, model)
        from trtopt.calib.source import model_input_specs, validate_batch

        feeds = validate_batch(feeds, model_input_specs(model), where=f"evaluation data {args.eval}")
        with err.status("accuracy budget") as status:
            res = quantize(model, table, cfg, budget=Budget(args.max_accuracy_drop, feeds, labels, static),
                           progress=status.update)
        _print_budget(err, res.budget)
        _print_summary(err, res.summary, res.mac_share)
        if args.report:
            atomic_write_json(args.report, res.budget.summary())
        print(save_onnx(res.model, args.out))
        return 0
    data = _guard_data(args, table, model)
    from trtopt.cli.args import parse_output_kinds
    from trtopt.judge.generic import DEFAULT_TOLERANCE, with_regression_outputs

    tol = with_regression_outputs(DEFAULT_TOLERANCE, args.regression_output)
    held = None
    if args.eval is not None:
        from trtopt.calib.source import model_input_specs, validate_batch

        feeds, _, _ = _load_npz(args.eval, model)
        held = validate_batch(feeds, model_input_specs(model), where=f"evaluation data {args.eval}")
    with err.status("inserting Q/DQ") as status:
        res = quantize(model, table, cfg, data, tolerance=tol,
                       progress=status.update if err.is_terminal else _line(err),
                       kinds=parse_output_kinds(args.output_kind), eval_inputs=held)
    if res.guard is not None:
        _print_guard(err, res.guard)
    if res.repair is not None and res.repair.bias is not None:
        b = res.repair.bias
        err.print(f"repair: bias correction on {len(b.corrected)} INT8 layer(s)"
                  + (f", {len(b.skipped)} without a correctable bias" if b.skipped else ""), markup=False)
    _print_summary(err, res.summary, res.mac_share)
    print(save_onnx(res.model, args.out))
    return 0


def _line(console):
    """Progress as plain lines where there is no terminal for a spinner (CI logs, pipes): long guard runs show life."""
    return lambda msg: console.print(msg, highlight=False, markup=False)


def _guard_data(args: argparse.Namespace, table, model):
    """Calibration data for the fidelity guard and the FP16 ranges of ``--fp16-rest``, or ``None``.

    From --calib-data, else (guard on) from the file the table recorded (content-hash checked).
    """
    import logging

    from trtopt.fileio import sha256_file

    path, static = args.calib_data, tuple(args.static_input)
    rec = table.meta.get("data_file") if isinstance(table.meta.get("data_file"), dict) else None
    if not static and rec is not None:
        static = tuple(rec.get("static", ()))
    if path is None:
        if args.no_fidelity_guard and not args.repair:
            return None
        log = logging.getLogger("trtopt.quantize")
        if rec is None:
            log.warning("fidelity not checked: pass --calib-data CALIB.npz to check the INT8 model against FP32")
            return None
        path = Path(rec["path"])
        if not path.is_file() or sha256_file(path) != rec.get("sha256"):
            log.warning("fidelity not checked: the calibration data recorded in the table (%s) is gone or changed; "
                        "pass --calib-data CALIB.npz", path)
            return None
    return _calib_data(path, static, model)


def _calib_data(path: Path, static: tuple[str, ...], model):
    """``--calib-data`` in the one data format: every sample (the guard picks its own seeded subset)."""
    from trtopt.calib.source import model_input_specs, validate_batch
    from trtopt.dataset import load_npz
    from trtopt.quant import CalibData

    ds = load_npz(path, static=static).check_onnx(model)
    feeds = validate_batch({**ds.inputs, **ds.static}, model_input_specs(model), where=f"calibration data {path}")
    return CalibData(feeds, tuple(ds.static))


def _print_guard(console, res) -> None:
    """What the fidelity guard did, in one or a few lines: the kind of each output, the case, the layers kept."""
    where = f"{res.held_out} held-out samples" if res.held_out else f"{res.samples} calibration samples"
    case = ""
    if res.verdict_all is not None:
        for o in res.verdict_all.outputs:
            margin = "" if o.margin is None else f"; all-INT8 margin {o.margin:+.2f} points"
            console.print(f"fidelity guard: output {o.name}: {o.kind.describe()}{margin}", markup=False,
                          highlight=False)
        case = f" [{res.verdict_all.explain()}]"
    if not res.violations_all:
        console.print(f"fidelity guard: all-INT8 within tolerance on {where}{case}", markup=False, highlight=False)
        return
    mods = [m for m in res.kept_modules if m]
    if any(v.startswith("top1_agreement") for v in res.violations_all):
        console.print("fidelity guard: per-sample top-1 agreement on fewer than 1000 samples is judged by its 95% "
                      "upper bound (Wilson), against half the tolerance's allowed loss (99.5%)",
                      markup=False, highlight=False)
    console.print(f"fidelity guard: all-INT8 missed the tolerance on {where} "
                  f"({'; '.join(res.violations_all[:2])}); kept "
                  f"{len(res.kept_nodes)} most sensitive layer(s) in float: {', '.join(res.kept_nodes[:6])}"
                  + (" ..." if len(res.kept_nodes) > 6 else "") + (f" (modules {', '.join(mods[:6])})" if mods else ""),
                  markup=False, highlight=False)


def _print_summary(console, s, share=None, limit: int = 8) -> None:
    """One screen: preparation notes, Q/DQ pairs, layers in INT8, layers kept in float and why, INT8 MACs."""
    if s is None:
        return
    for note in s.notes:
        console.print(f"note: {note}", markup=False)
    kept = s.kept_float
    console.print(f"INT8: {s.int8_nodes} layer(s) quantized, {s.qdq_pairs} Q/DQ pair(s) "
                  f"({s.dequantize_nodes} DequantizeLinear); {len(kept)} kept in float", markup=False)
    for name, why in list(kept.items())[:limit]:
        console.print(f"  kept in float: {name}: {why}", markup=False)
    if len(kept) > limit:
        console.print(f"  ... and {len(kept) - limit} more", markup=False)
    if share is not None:
        at = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in share.shapes.items())
        console.print(f"{share.line()} at {at}", markup=False, highlight=False)
        for n in share.top_float(3):
            console.print(f"  float: {n.name} ({n.op_type}) {100 * n.macs / share.total_macs:.1f}% of MACs",
                          markup=False, highlight=False)


def _print_fp16(console, res) -> None:
    """Nodes kept in FP32 by reason (one line per reason kind, with examples), and the preview status."""
    import re
    from collections import defaultdict

    reasons = res.fp16_reasons
    console.print(f"FP16: {len(reasons)} node(s) kept in FP32")
    groups: dict[str, list[str]] = defaultdict(list)
    for node, why in reasons.items():
        kind = why if why.startswith("FP16 overflow") else re.sub(r" '[^']*'| \(max \|x\| = [^)]*\)", "", why)
        kind = re.sub(r"^\|activation\| \S+ > (\S+) at$", r"|activation| > \1", kind)
        groups[kind].append(node)
    for kind, nodes in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        more = f" (+{len(nodes) - 3} more)" if len(nodes) > 3 else ""
        console.print(f"  {len(nodes)} x {kind}: {', '.join(nodes[:3])}{more}")
    if not res.fp16_checked:
        console.print("  FP16 overflow on real data not checked: pass --calib-data CALIB.npz for the data rule and "
                      "the FP16-arithmetic overflow preview")


def _print_budget(console, res) -> None:
    from rich.table import Table

    from trtopt.cli.tables import print_table

    t = Table(title=f"accuracy budget ({res.metric}, max drop {res.max_drop} points)")
    for col in ("FP32", "all INT8", "final", "drop", "within budget"):
        t.add_column(col)
    t.add_row(f"{res.fp32:.3f}", f"{res.int8_all:.3f}", f"{res.final:.3f}", f"{res.fp32 - res.final:.3f}",
              "yes" if res.within_budget else "NO")
    print_table(console, t)
    if res.kept_nodes:
        k = Table(title="kept out of INT8 (worst first)")
        k.add_column("ONNX node")
        k.add_column("PyTorch module")
        k.add_column("sensitivity")
        for n, mod in zip(res.kept_nodes, res.kept_modules):
            k.add_row(n, mod or "-", f"{res.sensitivity.get(n, 0):.3g}")
        print_table(console, k, ("PyTorch module",))
