"""Fake runners for timing tests: a synthetic clock that advances only when a fake model runs."""

from __future__ import annotations

import numpy as np

from trtopt.backends.base import Runner, TensorSpec


class Clock:
    """Nanosecond clock that advances only when a fake model runs."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class DriftRunner(Runner):
    """A model whose iteration takes ``base_ms * (1 + drift_per_s * t)``: the machine slows down over time
    (a throttling GPU, a neighbour ramping up), the same for every variant."""

    backend = "fake"

    def __init__(self, clock: Clock, base_ms: float, drift_per_s: float = 0.0, log: list | None = None,
                 name: str = "", noise: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.clock, self.base_ms, self.drift, self.log, self.name = clock, base_ms, drift_per_s, log, name
        self.rng, self.noise = np.random.default_rng(seed), noise

    def _activate(self) -> None:
        pass

    def input_specs(self):
        return [TensorSpec("input", (None, 3), np.dtype(np.float32))]

    def output_specs(self):
        return [TensorSpec("out", (None, 3), np.dtype(np.float32))]

    def describe(self):
        return {"backend": self.backend, "threads": 1}

    def _infer(self, feeds):
        t_s = self.clock.now * 1e-9
        ms = self.base_ms * (1 + self.drift * t_s) * float(np.exp(self.rng.normal(0, self.noise)))
        self.clock.now += int(ms * 1e6)
        if self.log is not None:
            self.log.append(self.name)
        return {"out": feeds["input"]}


FEEDS = {"input": np.zeros((4, 3), np.float32)}
