"""pytest plugin: assert on trtopt benchmark reports in your own tests.

Registered through the ``pytest11`` entry point, so installing trtopt makes the
``trtopt_report`` fixture available everywhere. Loading the plugin imports nothing heavy
(numpy, onnx and torch are imported only when a report is opened).

Example::

    def test_int8_engine_is_worth_it(trtopt_report):
        report = trtopt_report("bench/results/digits-demo/report.json")   # or pytest --trtopt-report PATH
        report.assert_variant("int8", min_accuracy_ratio=0.99, min_speedup=1.8)

``min_accuracy_ratio=0.99`` means "keeps at least 99% of the FP32 accuracy";
``min_speedup=1.8`` means "at least 1.8x the FP32 throughput" (same backend and batch size
when available). Failures read like::

    int8 (onnxruntime, batch 64): speedup 1.21x < 1.8x
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class ReportCheck:
    """A loaded report with assertion helpers.

    Args:
        data: A validated report dict (``trtopt.report/1`` or ``/2``).
        source: Where it came from, for messages.
    """

    def __init__(self, data: dict[str, Any], source: str = "report") -> None:
        self.data = data
        self.source = source

    @property
    def variants(self) -> list[dict[str, Any]]:
        """The report's variant rows."""
        return self.data["variants"]

    def variant(self, name: str, batch_size: int | None = None, backend: str | None = None) -> dict[str, Any]:
        """Return the single row matching ``name`` (and batch size / backend when given).

        Raises:
            AssertionError: No row, or several rows and no way to choose.
        """
        rows = [v for v in self.variants if v["name"] == name and (batch_size is None or v["batch_size"] == batch_size)
                and (backend is None or v["backend"] == backend)]
        if not rows:
            have = sorted({f"{v['name']}@{v['batch_size']}/{v['backend']}" for v in self.variants})
            raise AssertionError(f"{self.source}: no variant {name!r} (batch={batch_size}, backend={backend}); "
                                 f"have {have}")
        if len({v["backend"] for v in rows}) > 1:
            raise AssertionError(f"{self.source}: variant {name!r} ran on several backends; pass backend=")
        return max(rows, key=lambda v: int(v["batch_size"]))  # default: the largest batch (throughput view)

    def baseline(self, row: dict[str, Any]) -> dict[str, Any]:
        """Return the dense FP32 row at the same batch size (same backend preferred)."""
        cands = [v for v in self.variants if v["precision"] == "fp32" and v["sparsity"] == "dense"
                 and v["batch_size"] == row["batch_size"] and v["status"] == "ok"]
        same = [v for v in cands if v["backend"] == row["backend"]]
        if not (same or cands):
            raise AssertionError(f"{self.source}: no ok dense FP32 variant at batch {row['batch_size']}")
        return (same or cands)[0]

    def assert_variant(self, name: str, *, min_accuracy_ratio: float | None = None,
                       max_accuracy_drop: float | None = None, min_speedup: float | None = None,
                       min_throughput: float | None = None, batch_size: int | None = None,
                       backend: str | None = None) -> dict[str, Any]:
        """Assert that a variant ran and meets its targets against FP32.

        Args:
            name: Variant name.
            min_accuracy_ratio: Variant accuracy / FP32 accuracy must be at least this (0.99 = 99%).
            max_accuracy_drop: FP32 accuracy minus variant accuracy, in points, must be at most this.
            min_speedup: Variant throughput / FP32 throughput must be at least this.
            min_throughput: Absolute samples/s floor.
            batch_size: Row to check (default: the largest batch size of the variant).
            backend: Backend of the row (needed when the variant ran on several).

        Returns:
            The checked row.
        """
        row = self.variant(name, batch_size, backend)
        where = f"{name} ({row['backend']}, batch {row['batch_size']})"
        if row["status"] != "ok":
            raise AssertionError(f"{where}: {row['status']}: {row['reason']}")
        base = self.baseline(row)
        fails = []
        acc, bacc = (row.get("accuracy") or {}).get("value"), (base.get("accuracy") or {}).get("value")
        if (min_accuracy_ratio is not None or max_accuracy_drop is not None) and (acc is None or bacc is None):
            fails.append("no accuracy in the report (evaluation data had no labels)")
        elif acc is not None and bacc is not None:
            if min_accuracy_ratio is not None and bacc > 0 and acc / bacc < min_accuracy_ratio:
                fails.append(f"accuracy {acc:.2f} is {100 * acc / bacc:.2f}% of FP32 {bacc:.2f} "
                             f"< {100 * min_accuracy_ratio:g}%")
            if max_accuracy_drop is not None and bacc - acc > max_accuracy_drop:
                fails.append(f"accuracy drop {bacc - acc:.2f} points > {max_accuracy_drop:g}")
        tput, btput = float(row["throughput_sps"]), float(base["throughput_sps"])
        if min_speedup is not None and tput / btput < min_speedup:
            fails.append(f"speedup {tput / btput:.2f}x < {min_speedup:g}x")
        if min_throughput is not None and tput < min_throughput:
            fails.append(f"throughput {tput:,.1f} samples/s < {min_throughput:,.1f}")
        if fails:
            raise AssertionError(f"{where}: " + "; ".join(fails))
        return row


def load_check(path: str | os.PathLike[str]) -> ReportCheck:
    """Load and validate a report file for assertions (raises on another schema version)."""
    from trtopt.benchmark.report import load_report

    return ReportCheck(load_report(path), str(path))


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--trtopt-report PATH`` (default report for the ``trtopt_report`` fixture)."""
    parser.addoption("--trtopt-report", default=os.environ.get("TRTOPT_REPORT"), metavar="PATH",
                     help="trtopt report.json used by the trtopt_report fixture (env: TRTOPT_REPORT)")


@pytest.fixture
def trtopt_report(request: pytest.FixtureRequest) -> Callable[..., ReportCheck]:
    """Return ``load(path=None) -> ReportCheck``; without a path, ``--trtopt-report`` is used.

    A missing default report skips the test (nothing was benchmarked here); an explicit path
    that does not exist fails it.
    """

    def load(path: str | os.PathLike[str] | None = None) -> ReportCheck:
        if path is None:
            path = request.config.getoption("--trtopt-report")
            if not path or not Path(path).is_file():
                pytest.skip("no trtopt report: pass --trtopt-report PATH or set TRTOPT_REPORT")
        from trtopt.errors import TrtoptError

        try:
            return load_check(path)
        except TrtoptError as exc:
            pytest.fail(str(exc), pytrace=False)

    return load
