"""``trtopt build``: build (or reuse) a TensorRT engine in the engine store."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtopt.backends.tensorrt.config import FLAVOURS, Profile
from trtopt.backends.tensorrt.profiles import merge_profiles, parse_shapes, profiles_from_specs
from trtopt.cli.args import add_model_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    p = sub.add_parser("build", help="build a TensorRT engine (10.x / 11.x, or TensorRT for RTX) into the engine store",
                       description="Build a TensorRT engine from an ONNX model, or reuse the stored one with the "
                                   "same model, options, TensorRT version and GPU (TensorRT for RTX: targets). Prints "
                                   "engine and manifest paths and how many quantized layers compiled to INT8.")
    add_model_arg(p)
    p.add_argument("--backend", choices=FLAVOURS, default="tensorrt",
                   help="tensorrt (TensorRT 10/11; TensorRT for RTX if only that is installed) or tensorrt-rtx "
                        "(TensorRT for RTX: builds ahead of time without a GPU; install the [tensorrt-rtx] extra)")
    p.add_argument("--compute-capability", default=None, metavar="SM,...",
                   help="TensorRT-RTX target GPUs, e.g. sm80,sm86,sm89,sm120 (default: TensorRT-RTX's own "
                        "defaults, Ampere and later; sm75 only when asked: Turing has no INT8 convolution and no "
                        "FP32 GEMM there; `trtopt inspect targets MODEL.onnx` says what compiles on each)")
    p.add_argument("--strict", action="store_true",
                   help="fail when a layer quantized in the ONNX graph compiles in float (default: warn)")
    g = p.add_argument_group("Precision")
    g.add_argument("--precision", choices=("auto", "fp32", "fp16", "int8", "int8+fp16", "best"), default="auto",
                   help="auto (default): the graph's own types (a Q/DQ model builds INT8, an FP16 model FP16, an FP32 "
                        "model FP32 with TF32 off); fp32, fp16, int8, int8+fp16 or best choose builder flags where "
                        "TensorRT 10 builds an FP32 graph weakly typed (TensorRT 11 and RTX: the graph's types decide)")
    g.add_argument("--calib", type=Path, metavar="TABLE_OR_CACHE",
                   help="calibration table (.json) or TensorRT cache for implicit INT8 (TensorRT 10.x)")
    g.add_argument("--sparsity", action="store_true", help="enable 2:4 sparse tactics (SPARSE_WEIGHTS)")
    g.add_argument("--tf32", action="store_true", help="allow TF32 for FP32 math (off by default)")
    s = p.add_argument_group("Shapes and builder")
    s.add_argument("--shapes", nargs="+", action="extend", default=[], metavar="NAME:MIN,OPT,MAX",
                   help="optimization profile per dynamic input, e.g. input:1x3x224x224,8x3x224x224,32x3x224x224")
    s.add_argument("--input", action="append", default=[], metavar="SPEC", dest="inputs",
                   help="input spec NAME:DTYPE:SHAPE as in export/prune (e.g. ids:int64:batch=1..8..32xseq=16..128): "
                        "the profile's MIN/OPT/MAX come from its dim ranges; --shapes wins for an input it names")
    s.add_argument("--workspace-mib", type=int, default=0, help="workspace limit in MiB (0 = TensorRT default)")
    s.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0-5 (default 3)")
    s.add_argument("--timing-cache", type=Path, default=None, help="timing cache file to load and update")
    s.add_argument("--version-compatible", action="store_true", help="version-compatible engine")
    s.add_argument("--hardware-compat", choices=("none", "ampere_plus", "same_compute_capability"), default="none",
                   help="hardware compatibility level")
    s.add_argument("--dla-core", type=int, default=-1, help="build for this DLA core with GPU fallback (10.x, Jetson)")
    o = p.add_argument_group("Store")
    o.add_argument("--engine-dir", type=Path, default=Path("engines"), help="engine store folder (default engines/)")
    o.add_argument("--rebuild", action="store_true", help="build even if a matching engine is stored")
    p.set_defaults(func=run)


def _profile(args: argparse.Namespace) -> tuple[Profile, ...]:
    """``--shapes`` entries plus the profile of every ``--input`` spec that ``--shapes`` does not name.

    The only place where profile text is parsed: the build takes the typed profiles.
    """
    given = parse_shapes(args.shapes)
    if not args.inputs:
        return given
    from trtopt.inputs import check_specs_against_onnx, parse_input_specs
    from trtopt.onnx.io import load_graph_only

    specs = parse_input_specs(args.inputs)
    check_specs_against_onnx(specs, load_graph_only(args.model))
    return merge_profiles(given, profiles_from_specs(specs))


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt build``."""
    from trtopt.backends.tensorrt.config import parse_compute_capabilities
    from trtopt.backends.tensorrt.flavour import import_tensorrt

    targets = parse_compute_capabilities(args.compute_capability) if args.compute_capability is not None else ()
    import_tensorrt(args.backend)  # first, so a machine without TensorRT gets the one-line install hint
    from rich.console import Console

    from trtopt.backends.tensorrt import BuildConfig, build_engine

    shapes = _profile(args)
    config = BuildConfig(backend=args.backend, compute_capabilities=targets, strict=args.strict,
                         precision=args.precision, sparsity=args.sparsity, shapes=shapes,
                         workspace_mib=args.workspace_mib, optimization_level=args.opt_level,
                         timing_cache=str(args.timing_cache or ""), version_compatible=args.version_compatible,
                         hardware_compat=args.hardware_compat, dla_core=args.dla_core, tf32=args.tf32)
    res = build_engine(args.model, config, engine_dir=args.engine_dir, calibration=args.calib, rebuild=args.rebuild)
    console = Console(soft_wrap=True)  # engine paths on one line (CI logs, grep)
    sp = res.data.get("sparsity") or {}
    console.print(f"{'reused' if res.reused else 'built'} engine: {res.engine}")
    console.print(f"manifest: {res.manifest}")
    prec = res.data.get("build", {}).get("precision") or {}
    if prec:
        source = "from the graph" if prec.get("requested") == "auto" else "--precision; the graph holds"
        console.print(f"precision: {prec.get('built')} ({source}: {prec.get('graph')})", highlight=False)
    if args.sparsity and sp:
        console.print(f"sparsity: {sp.get('summary')}", highlight=False)
    fmt = lambda t: "x".join(map(str, t))  # noqa: E731
    for name, prof in (res.data.get("profiles") or {}).items():
        if prof.get("source") != "--shapes":  # say where a profile the user did not give came from
            console.print(f"profile {name}: {fmt(prof['min'])}, {fmt(prof['opt'])}, {fmt(prof['max'])} "
                          f"(from {prof.get('source')})", highlight=False)
    compiled = res.data.get("compiled") or {}
    if compiled:
        console.print(compiled.get("summary", ""), highlight=False)
        if compiled.get("mac_summary"):
            console.print(f"{compiled['mac_summary']} (at the opt shapes)", highlight=False)
        for n in compiled.get("fallbacks") or []:
            module = f", module {n['module']}" if n.get("module") else ""
            console.print(f"  fell back: {n['node']} ({n['op']}{module}) compiled "
                          f"{n.get('compiled') or 'not found'}", highlight=False)
    return 0
