"""Exception hierarchy.

Every error a *user* can cause (bad path, corrupt model, unknown recipe key, missing
optional dependency) derives from :class:`TrtoptError`. The CLI turns these into one
line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TrtoptError(Exception):
    """A user-facing error: the message is shown as one line, exit code 2."""

    exit_code: int = 2


class ConfigError(TrtoptError):
    """An invalid configuration value, recipe key or command-line option."""


class InputError(TrtoptError):
    """A missing, unreadable or corrupt input file, or data of the wrong shape/dtype."""


class MetricError(InputError):
    """The user's task metric raised or returned a non-number.

    It fails the whole run (every variant would fail the same way), never just one variant.
    """


class MissingDependencyError(TrtoptError):
    """An optional dependency is not installed.

    Build it with :func:`trtopt.optional.missing_dependency`, which composes ``hint`` for how trtopt
    was installed.

    Args:
        module: The import name that failed (e.g. ``"tensorrt"``).
        extra: The pip extra that installs it (e.g. ``"tensorrt"``), or ``None`` for a base dependency.
        detail: Optional extra context (e.g. what needed the module).
        hint: The install command (e.g. ``pip install 'trtopt[tensorrt]'``).
    """

    def __init__(self, module: str, extra: str | None, detail: str = "", hint: str = "") -> None:
        self.module = module
        self.extra = extra
        how = f" ({hint})" if hint else ""
        msg = (f"{module} is not installed: install the [{extra}] extra{how}" if extra
               else f"{module} is not installed: it is a dependency of trtopt, reinstall it{how}")
        if detail:
            msg = f"{msg}; {detail}"
        super().__init__(msg)


class BackendUnavailableError(TrtoptError):
    """A backend is installed but cannot run here (e.g. TensorRT without a CUDA GPU)."""


class BuildError(TrtoptError):
    """An engine build or ONNX parse failed; the message lists node, operator and reason."""


class IncompatibleArtifactError(TrtoptError):
    """An engine, cache or table was made for another model, TensorRT version or GPU."""


class GateFailure(TrtoptError):
    """A regression gate found a regression (exit code 1, unlike user errors)."""

    exit_code = 1


class GateInconclusive(TrtoptError):
    """A regression gate could not tell noise from regression (exit code 3): re-run quieter or time longer."""

    exit_code = 3
