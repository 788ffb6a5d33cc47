"""``trtopt prune --method structured|lowrank|unstructured``: a smaller dense model, faster on every GPU and CPU.

The options are parsed into one typed config (:class:`~trtopt.pruning.StructuredConfig`,
:class:`~trtopt.pruning.LowRankConfig` or :class:`~trtopt.pruning.UnstructuredConfig`) and a
:class:`~trtopt.pruning.ScheduleConfig`, then one :func:`trtopt.pruning.api.prune_dense` call does
the work; this module prints its result and writes the outputs (all or nothing). A pruned model
whose metric falls more than ``--max-drop`` points below dense is reported ✗ and nothing is saved
(exit 1) unless ``--keep-failed``.
"""

from __future__ import annotations

import argparse
from typing import Any

#: methods handled here (the 2:4 methods stay in :mod:`trtopt.cli.cmd_prune`)
DENSE_METHODS = ("structured", "lowrank", "unstructured")
#: options that only dense methods read (``None`` unless given)
_DENSE_ONLY = ("target_macs", "importance", "max_layer_ratio", "round_to", "energy", "amount", "steps",
               "kd_alpha", "max_drop")
#: options that only 2:4 methods read, with their defaults
_SPARSE_ONLY = {"masks": None, "out_masks": None, "calib": None, "distill_alpha": None, "loss": "auto"}


def add_dense_args(p: argparse.ArgumentParser) -> None:
    """The options of structured / low-rank / unstructured pruning and of the iterative schedule."""
    g = p.add_argument_group("Dense pruning (--method structured | lowrank | unstructured)")
    g.add_argument("--target-macs", type=float, default=None, metavar="FRACTION",
                   help="structured: keep this fraction of the dense Conv/Linear MACs (default 0.5); lowrank: "
                        "each factorized layer keeps this fraction of its MACs (instead of --energy)")
    g.add_argument("--importance", choices=("l1", "l2", "bn_scale", "taylor"), default=None,
                   help="structured: channel importance (default l1; taylor needs --data or a workload)")
    g.add_argument("--global-ranking", action="store_true",
                   help="structured / unstructured: one threshold across layers instead of one ratio per layer")
    g.add_argument("--protect", action="append", default=[], metavar="PATTERN",
                   help="structured: never prune the outputs of matching modules (glob or re:REGEX); repeatable")
    g.add_argument("--prune-stem", action="store_true", help="structured: also prune the first layer's outputs")
    g.add_argument("--max-layer-ratio", type=float, default=None,
                   help="structured: most of one layer's channels that may go (default 0.9)")
    g.add_argument("--round-to", type=int, default=None,
                   help="structured: keep channel counts multiples of this (default 8: ONNX Runtime CPU and tensor "
                        "cores run odd counts slowly; 1: any count)")
    g.add_argument("--energy", type=float, default=None,
                   help="lowrank: keep the smallest rank holding this share of the squared singular values "
                        "(default 0.9)")
    g.add_argument("--amount", type=float, default=None,
                   help="unstructured: share of weights set to zero (default 0.5; no speedup on TensorRT)")
    g.add_argument("--steps", type=int, default=None,
                   help="prune in this many steps to the target, fine-tuning --finetune-epochs after each (default 1)")
    g.add_argument("--kd-alpha", type=float, default=None,
                   help="weight of distillation from the dense model: a*T^2*KL + (1-a)*CE (default 0.5)")
    g.add_argument("--max-drop", type=float, default=None,
                   help="allowed metric drop below dense in points (default 1.0); more is a failed result")
    g.add_argument("--keep-failed", action="store_true", help="save a pruned model even when it lost the task")


def check_method_options(args: argparse.Namespace) -> None:
    """Options of the other family of methods are errors, not silently ignored."""
    from trtopt.errors import ConfigError

    dense = args.method in DENSE_METHODS
    if dense:
        wrong = [k for k, default in _SPARSE_ONLY.items() if getattr(args, k) != default]
        if args.pattern != "2:4":
            wrong.append("pattern")
    else:
        wrong = [k for k in _DENSE_ONLY if getattr(args, k) is not None]
        wrong += [k for k in ("global_ranking", "prune_stem", "keep_failed", "protect") if getattr(args, k)]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        other = "2:4 methods (magnitude, permutation, sparsegpt)" if dense else "structured, lowrank, unstructured"
        raise ConfigError(f"{flags} applies only to {other}, not to --method {args.method}")


def configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The method config and the schedule from the options (each checks its values)."""
    from trtopt.errors import ConfigError
    from trtopt.pruning import LowRankConfig, ScheduleConfig, StructuredConfig, UnstructuredConfig

    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    if args.method == "structured":
        if args.include or args.exclude:
            raise ConfigError("--include/--exclude apply to lowrank/unstructured; structured pruning takes --protect")
        cfg: Any = StructuredConfig(**given(target_macs=args.target_macs, importance=args.importance,
                                            max_layer_ratio=args.max_layer_ratio, round_to=args.round_to),
                                    global_ranking=args.global_ranking, protect=tuple(args.protect),
                                    protect_stem=not args.prune_stem)
    elif args.method == "lowrank":
        if args.energy is not None and args.target_macs is not None:
            raise ConfigError("--energy and --target-macs choose the rank two ways: give one")
        cfg = LowRankConfig(**given(energy=args.energy, target_macs=args.target_macs),
                            include=tuple(args.include), exclude=tuple(args.exclude))
    else:
        cfg = UnstructuredConfig(**given(amount=args.amount), global_ranking=args.global_ranking,
                                 include=tuple(args.include), exclude=tuple(args.exclude))
    for k, method in (("importance", "structured"), ("energy", "lowrank"), ("amount", "unstructured")):
        if getattr(args, k) is not None and args.method != method:
            raise ConfigError(f"--{k} applies to --method {method}, not {args.method}")
    sched = ScheduleConfig(**given(steps=args.steps, kd_alpha=args.kd_alpha, max_drop=args.max_drop,
                                   temperature=args.temperature),
                           epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size)
    return cfg, sched


def _as_tuple(x) -> tuple | None:
    if x is None:
        return None
    return tuple(x.values()) if isinstance(x, dict) else (x,)


def run_dense(args: argparse.Namespace, src, data, specs) -> dict[str, Any] | None:
    """Prune ``src.model`` with one :func:`~trtopt.pruning.api.prune_dense` call and print the result.

    Returns:
        The JSON report to save with the model, or ``None`` when the pruned model lost the task and
        ``--keep-failed`` is not set (the caller saves nothing and exits 1).
    """
    import json
    import sys

    import numpy as np

    from trtopt.errors import ConfigError
    from trtopt.pruning.api import prune_dense
    from trtopt.pruning.schedule import TaskData
    from trtopt.refs import is_import_ref

    cfg, sched = configs(args)
    if args.data and is_import_ref(args.data):
        raise ConfigError("dense pruning reads --data TRAIN.npz (a dataloader factory is for the 2:4 methods)")
    task = TaskData(_as_tuple(data.train_x), data.train_y, _as_tuple(data.eval_x), data.eval_y)
    if sched.epochs > 0 and task.train_x is None:
        raise ConfigError("--finetune-epochs needs training data: --data TRAIN.npz (one array per input + 'labels') "
                          "or a --workload with training data")
    if src.workload is not None:
        example = src.workload.as_feeds(src.workload.example)
    elif specs:
        from trtopt.inputs import random_feeds

        example = random_feeds(specs, 1, seed=0)
    elif task.train_x is not None:
        example = {str(i): np.asarray(x[:1]) for i, x in enumerate(task.train_x)}
    else:
        raise ConfigError("dense pruning needs the model's inputs: --input NAME:DTYPE:SHAPE per forward() argument "
                          "(or --input-shape N,C,H,W), or --data TRAIN.npz")
    quiet = getattr(args, "quiet", False)

    def step_line(rec) -> None:
        if not quiet:
            m = "" if rec.metric is None else f", metric {rec.metric_pruned:.2f} -> {rec.metric:.2f}"
            print(f"prune step {rec.step}/{sched.steps}: MACs {rec.macs:,}{m}", file=sys.stderr, flush=True)

    result = prune_dense(src.model, cfg, example, sched, task, on_step=step_line)
    out = {**result.to_dict(), "config": {"method": cfg.method, **{k: getattr(cfg, k) for k in
                                                                    cfg.__dataclass_fields__}}}
    print(json.dumps(out, default=str) if args.json else "\n".join(result.lines()))
    if result.failed and not args.keep_failed:
        print(f"✗ the pruned model lost the task ({result.metric_name} {result.metric_final:.2f} vs dense "
              f"{result.metric_dense:.2f}, more than --max-drop {sched.max_drop:g} points): nothing saved "
              "(--keep-failed saves it)", file=sys.stderr)
        return None
    return out
