"""Console progress for long-running commands (rich): one line per stage with elapsed time."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console


class StageProgress:
    """Print ``[mm:ss] stage  detail`` lines as a pipeline reports progress.

    Args:
        console: Where to print (stderr by default, so stdout stays machine-readable).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)  # never split a path mid-line in CI logs
        self.t0 = time.perf_counter()

    def __call__(self, stage: str, detail: str) -> None:
        """Report that ``stage`` started working on ``detail``."""
        el = time.perf_counter() - self.t0
        self.console.print(f"[dim][{int(el // 60):02d}:{el % 60:04.1f}][/dim] [bold cyan]{stage:<10}[/] {detail}")

    def callback(self) -> Callable[[str, str], None]:
        """Return self as a plain callback."""
        return self
