"""``trtopt`` entry point: one argparse parser with a subparser per command module.

Each command lives in ``trtopt/cli/cmd_<name>.py`` and exposes ``register(subparsers)``.
Command modules import heavy dependencies only inside their ``run`` functions, so
``trtopt <cmd> -h`` works without torch, onnxruntime or TensorRT. A module that fails to
import is replaced by a placeholder that explains why (Polygraphy's MissingTool idea).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from trtopt import __version__
from trtopt.errors import TrtoptError

COMMANDS = (
    "demo", "run", "doctor", "prune", "export", "calibrate", "quantize", "build", "bench", "inspect", "gate", "report",
)


def _register_all(sub: argparse._SubParsersAction) -> None:
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"trtopt.cli.cmd_{name}")
        except ImportError as exc:  # keep `trtopt -h` alive even if one command is broken
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(func=lambda _a, _e=exc: (_ for _ in ()).throw(TrtoptError(str(_e))))
            continue
        mod.register(sub)


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``trtopt`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="trtopt",
        description="2:4 sparsity, entropy calibration, INT8/FP16 and TensorRT engines, benchmarked against FP32.",
    )
    parser.add_argument("--version", action="version", version=f"trtopt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_all(sub)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_time=False)
    else:  # piped or in CI: one unwrapped line per record (rich would wrap at 80 columns, splitting names)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("trtopt")
    log.handlers = [h for h in log.handlers if isinstance(h, logging.NullHandler)] + [handler]
    log.setLevel(level)


#: exit code when stdout's reader went away (`trtopt ... | head`): 128 + SIGPIPE, as a shell reports it
EXIT_BROKEN_PIPE = 141


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again.

    The reader of a pipe (``| head``) closed it: what is left to print has nowhere to go. This is
    the approach of the Python documentation (``signal`` module, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (without the program name); ``sys.argv[1:]`` by default.

    Returns:
        Process exit code: 0 success, 1 gate regression, 2 user error, 3 inconclusive gate,
        141 when stdout's reader closed the pipe (``trtopt ... | head``; quietly, no traceback).
    """
    try:
        rc = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here for buffered output
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except SystemExit as exc:
        # rich handles a closed pipe itself: it points stdout at /dev/null and raises SystemExit(1),
        # which would read as "gate: regression" (exit 1); report the broken pipe instead
        if exc.code == 1 and _stdout_is_devnull():
            return EXIT_BROKEN_PIPE
        raise


def _stdout_is_devnull() -> bool:
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino, out.st_rdev) == (null.st_dev, null.st_ino, null.st_rdev)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    try:
        rc = args.func(args)
    except TrtoptError as exc:
        print(f"trtopt {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"trtopt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # ONNX Runtime's own types (InvalidArgument, Fail, ...): one line, never its dump
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        first = " ".join(str(exc).split()) or type(exc).__name__
        print(f"trtopt {args.command}: error: ONNX Runtime: {first[:400]}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
