"""The runner interface every backend implements (ONNX Runtime, TensorRT, PyTorch).

A runner is a context manager: ``__enter__`` loads/allocates (session, engine, device
buffers), ``__exit__`` frees everything. ``infer`` is the plain numpy-in/numpy-out call
used for accuracy; ``prepare`` returns a zero-argument callable that runs one inference on
inputs bound ahead of time, which is what the benchmark times (so the timed region holds
no Python-side conversion a backend can do once).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trtopt.errors import InputError


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a model input or output.

    Attributes:
        name: Tensor name.
        shape: Dimensions; ``None`` (or a string) for a dynamic axis.
        dtype: numpy dtype of the tensor as the runtime expects it.
    """

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype

    def check(self, array: np.ndarray) -> None:
        """Raise :class:`InputError` if ``array`` does not fit this spec.

        Args:
            array: Candidate input.
        """
        if array.ndim != len(self.shape):
            raise InputError(
                f"input '{self.name}' has rank {array.ndim} (shape {tuple(array.shape)}), "
                f"model expects shape {_fmt_shape(self.shape)}"
            )
        for got, want in zip(array.shape, self.shape):
            if isinstance(want, int) and want >= 0 and got != want:
                raise InputError(
                    f"input '{self.name}' has shape {tuple(array.shape)}, "
                    f"model expects {_fmt_shape(self.shape)}"
                )
        if array.dtype != self.dtype:
            raise InputError(f"input '{self.name}' has dtype {array.dtype}, model expects {self.dtype}")


def _fmt_shape(shape: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("?" if not isinstance(d, int) or d < 0 else str(d) for d in shape) + ")"


class Runner(abc.ABC):
    """Base class of all backends' runners.

    Subclasses set :attr:`backend` and implement the ``_activate``/``_deactivate``/``_infer``
    hooks plus :meth:`input_specs` and :meth:`output_specs`.
    """

    #: short backend name used in reports: "onnxruntime", "tensorrt", "torch"
    backend: str = "base"

    def __init__(self) -> None:
        self._active = False

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Runner:
        if not self._active:
            self._activate()
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self._active = False
            self._deactivate()

    @property
    def active(self) -> bool:
        """Whether the runner is inside its context."""
        return self._active

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        return None

    # -- metadata ------------------------------------------------------------------
    @abc.abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """Return the model's input specs (valid once active)."""

    @abc.abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """Return the model's output specs (valid once active)."""

    def describe(self) -> dict[str, object]:
        """Return backend details for reports (provider, threads, device...)."""
        return {"backend": self.backend}

    # -- inference -----------------------------------------------------------------
    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Validate names, ranks, static dims and dtypes of ``feeds``.

        Args:
            feeds: Input name to array.

        Raises:
            InputError: On a missing/unknown input or a mismatching shape or dtype.
        """
        specs = {s.name: s for s in self.input_specs()}
        missing = sorted(set(specs) - set(feeds))
        unknown = sorted(set(feeds) - set(specs))
        if missing or unknown:
            raise InputError(
                f"inputs do not match the model: missing {missing or '[]'}, unknown {unknown or '[]'} "
                f"(model inputs: {sorted(specs)})"
            )
        for name, arr in feeds.items():
            specs[name].check(np.asarray(arr))

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference.

        Args:
            feeds: Input name to numpy array.

        Returns:
            Output name to numpy array (host memory).
        """
        if not self._active:
            raise RuntimeError(f"{type(self).__name__} must be activated (use it as a context manager)")
        self.check_inputs(feeds)
        return self._infer(feeds)

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """Bind ``feeds`` and return a callable that runs one inference on them.

        The default simply calls the backend with the bound feeds; GPU backends override it
        to keep inputs device-resident (the "no-transfer" timing mode).

        Args:
            feeds: Input name to numpy array.

        Returns:
            A zero-argument callable; its return value is backend-specific.
        """
        if not self._active:
            raise RuntimeError(f"{type(self).__name__} must be activated (use it as a context manager)")
        self.check_inputs(feeds)
        bound = dict(feeds)
        return lambda: self._infer(bound)
