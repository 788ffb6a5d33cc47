"""``trtopt run RECIPE.toml``: run a whole pipeline described by a TOML recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run a pipeline from a TOML recipe (workload -> variants -> benchmark report)"
EPILOG = """\
your own model ([workload], see docs/your-model.md):
  model = "mypkg.models:make"   (factory; or "model.pt", "model.onnx")
  inputs = ["input_ids:int64:batchx128:0..30522", "attention_mask:int64:batchx128:0..2"]
  calib_data = "calib.npz"      eval_data = "eval.npz"      train_data = "train.npz"  (docs/data-format.md)
without calib_data/eval_data, random inputs from the specs are used (and the report says so)"""


def add_run_args(p: argparse.ArgumentParser, default_out_hint: str) -> None:
    """Add the options shared by ``run`` and ``demo``."""
    g = p.add_argument_group("Output")
    g.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default_out_hint})")
    g = p.add_argument_group("Overrides")
    g.add_argument("--backend", choices=("onnxruntime", "tensorrt", "tensorrt-rtx", "torch"), default=None,
                   help="benchmark backend (overrides [recipe] backend)")
    g.add_argument("--variants", default=None, help="comma-separated variants (overrides [recipe] variants)")
    g.add_argument("--min-duration", type=float, default=None, metavar="S",
                   help="minimum timed seconds per variant (overrides [bench] min_duration_s)")
    g.add_argument("--strict", action="store_true",
                   help="exit 1 (after writing the report) when a variant is outside its fidelity tolerance "
                        "(marked ✗), failed or was skipped (e.g. sparse24-* of an .onnx model), or when a "
                        "variant's TensorRT-RTX engine build failed")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", metavar="RECIPE.toml", type=Path,
                   help="recipe file (see bench/recipes/); relative paths in it are relative to its folder")
    add_run_args(p, "runs/<recipe name>")
    p.set_defaults(func=run)


def overrides_from(args: argparse.Namespace) -> dict[str, dict]:
    """Translate CLI overrides into recipe-table overrides."""
    ov: dict[str, dict] = {}
    if args.backend:
        ov.setdefault("recipe", {})["backend"] = args.backend
    if args.variants:
        ov.setdefault("recipe", {})["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.min_duration is not None:
        ov.setdefault("bench", {})["min_duration_s"] = args.min_duration
    return ov


def execute(recipe_path: Path, args: argparse.Namespace) -> int:
    """Load, run and print a recipe (shared by ``run`` and ``demo``)."""
    from rich.markup import escape

    from trtopt.benchmark import render_table
    from trtopt.benchmark.render import OPTIONAL_COLUMNS
    from trtopt.benchmark.report import check_strict, engine_failures
    from trtopt.cli import tables
    from trtopt.cli.progress import StageProgress
    from trtopt.pipeline import Pipeline
    from trtopt.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides_from(args))
    if recipe.run.backend in ("tensorrt", "tensorrt-rtx"):
        from trtopt.backends.tensorrt.flavour import import_tensorrt

        import_tensorrt(recipe.run.backend)  # one line naming the extra when it is missing
    # default under ./runs (ignored by git): running the README's command leaves a clone clean
    out = args.out or Path(recipe.run.out or Path("runs") / recipe.run.name)
    progress = StageProgress()
    progress("recipe", f"{recipe.run.name} ({recipe_path}) -> {out}")
    result = Pipeline(recipe, out, progress=progress).run()
    console = tables.console()  # a terminal's width, or (piped, CI) the table's own: no cell is cut
    tables.print_table(console, render_table(result.report), OPTIONAL_COLUMNS)
    for kind, path in result.paths.items():
        console.print(f"[dim]{kind}:[/] {path}", soft_wrap=True)
    total = sum(result.stage_seconds.values())
    console.print(f"[dim]done in {total:.1f} s[/]")
    for line in engine_failures(result.report):  # one line each, also without --strict: not a result
        console.print(f"[bold red]engine build failed[/]: {escape(line)}")
    if getattr(args, "strict", False):
        check_strict(result.report)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``trtopt run``."""
    return execute(args.recipe, args)
