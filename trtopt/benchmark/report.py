"""The benchmark report: data model, schema ``trtopt.report/2``, validation and the ``--strict`` rule.

The JSON layout is documented in ``docs/report-schema.md``. Readers accept
``trtopt.report/1[.minor]`` (before interleaved timing and intervals) and
``trtopt.report/2[.minor]``, and reject other major versions with a clear error, so a
breaking change must bump the major version.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtopt.benchmark.accuracy import AccuracyResult
from trtopt.benchmark.stats import contains, paired_ratio_ci, ratio_of_medians_ci
from trtopt.benchmark.timing import TimingResult
from trtopt.errors import GateFailure, InputError
from trtopt.log import get_logger

if TYPE_CHECKING:
    from trtopt.onnx.macs import MacShare

log = get_logger(__name__)

SCHEMA = "trtopt.report/2"
SCHEMA_MAJOR = 2
#: majors this trtopt reads: 1 (point estimates only; throughput = samples over the whole timed span)
#: and 2 (interleaved rounds: throughput = median of per-round throughputs, with 95 % intervals)
READABLE_MAJORS = (1, 2)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SPARSITIES = ("dense", "2:4")
STATUSES = ("ok", "skipped", "failed")
VARIANT_KEYS = ("name", "backend", "precision", "sparsity", "batch_size", "throughput_sps", "latency_ms", "timing",
                "accuracy", "fidelity", "vs_fp32", "artifact", "status", "reason")


def jsonable(obj: Any) -> Any:
    """Return ``obj`` with non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return jsonable(obj.item())
    return obj


def as_float(value: Any) -> float | None:
    """Read a report number back (``"inf"`` strings included); ``None`` stays ``None``."""
    if value is None:
        return None
    return float(value)


@dataclass
class VariantResult:
    """One row of a report: a variant at one batch size.

    Attributes:
        name: Variant name (``fp32``, ``int8``, ``sparse24-int8``...).
        backend: ``onnxruntime``, ``tensorrt`` or ``torch``.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        sparsity: ``dense`` or ``2:4``.
        batch_size: Samples per inference.
        timing: Timing result, ``None`` when skipped/failed.
        accuracy: Accuracy result, ``None`` when skipped/failed.
        artifact: Path of the model/engine measured.
        status: ``ok``, ``skipped`` or ``failed``.
        reason: Why a variant was skipped/failed (empty when ok).
        extra: Free-form details (runner description...).
        engine: The engine column (written as ``extra["engine"]``), ``None`` when none was built.
        macs: INT8 share of the ONNX graph's Conv/ConvTranspose/Gemm/MatMul MACs (INT8 ONNX variants;
            ``None`` otherwise), written as ``int8_macs``.
        vs_fp32: Filled by :meth:`Report.finalize`.
    """

    name: str
    backend: str
    precision: str
    sparsity: str = "dense"
    batch_size: int = 1
    timing: TimingResult | None = None
    accuracy: AccuracyResult | None = None
    artifact: str | None = None
    status: str = "ok"
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    engine: EngineCell | None = None
    macs: MacShare | None = None
    vs_fp32: dict[str, Any] = field(default_factory=lambda: {"accuracy_delta": None, "speedup": None})

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InputError(f"variant '{self.name}': status must be one of {STATUSES}, got '{self.status}'")
        if self.status != "ok" and not self.reason:
            raise InputError(f"variant '{self.name}' is {self.status} but has no reason")

    def to_dict(self) -> dict[str, Any]:
        """Return the variant's schema object."""
        ok = self.status == "ok"
        t, a = (self.timing, self.accuracy) if ok else (None, None)
        return {
            "name": self.name, "backend": self.backend, "precision": self.precision, "sparsity": self.sparsity,
            "batch_size": self.batch_size,
            "throughput_sps": t.throughput_sps if t else None,
            "latency_ms": dict(t.latency_ms) if t else None,
            "timing": t.to_dict() if t else None,
            "accuracy": a.to_dict() if a else None,
            "fidelity": dict(a.fidelity) if a else {},
            "fidelity_violations": dict(a.violations) if a and a.violations else {},
            "fidelity_ok": a.fidelity_ok if a else None,
            "fidelity_tolerances": dict(a.tolerances) if a else {},
            "fidelity_reference": a.reference if a and a.fidelity else None,
            "fidelity_judged": a.judged if a and a.fidelity else None,
            "vs_fp32": dict(self.vs_fp32),
            "artifact": None if self.artifact is None else str(self.artifact),
            "status": self.status, "reason": self.reason,
            "int8_macs": self.macs.to_json() if self.macs is not None else None,
            "extra": {**self.extra, "engine": self.engine.to_dict()} if self.engine else self.extra,
        }


@dataclass(frozen=True)
class EngineCell:
    """The report's engine column for one variant: an ahead-of-time engine build (not timed).

    Attributes:
        text: What the column shows (``"0.9 MB · 5/5 INT8"``, an install command, ``"build failed: ..."``).
        status: ``ok``, ``failed`` or ``not installed``.
        reason: The build error when failed.
        details: Further facts written to ``report.json`` (``engine``, ``engine_mb``, ``int8``, ...).
    """

    text: str
    status: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row's ``extra["engine"]`` object in ``report.json``."""
        return {"text": self.text, "status": self.status,
                **({"reason": self.reason} if self.status == "failed" else {}), **self.details}


def speedup_of(t: TimingResult, base: TimingResult) -> dict[str, Any]:
    """Speedup of ``t`` over ``base`` with its 95 % interval.

    Same interleaved group and round count: the median of the paired per-round ratios with a
    paired bootstrap interval (``speedup_method = "paired-rounds"``). Rounds from different runs:
    ratio of median throughputs, two-sample bootstrap (``"independent-rounds"``). Sequential
    timings: the plain throughput ratio, no interval (``"point"``).

    Returns:
        ``speedup``, ``speedup_ci95`` (``[low, high]`` or ``None``), ``speedup_significant``
        (``None`` without an interval) and ``speedup_method``.
    """
    a, b = t.round_sps, base.round_sps
    if t is base:
        return {"speedup": 1.0, "speedup_ci95": [1.0, 1.0], "speedup_significant": False,
                "speedup_method": "same variant"}
    if a and b and t.group == base.group and t.group and len(a) == len(b):
        ratio, lo, hi = paired_ratio_ci(a, b)
        method = "paired-rounds"
    elif a and b:
        ratio, lo, hi = ratio_of_medians_ci(a, b)
        method = "independent-rounds"
    else:
        return {"speedup": t.throughput_sps / base.throughput_sps, "speedup_ci95": None,
                "speedup_significant": None, "speedup_method": "point"}
    return {"speedup": ratio, "speedup_ci95": [lo, hi], "speedup_significant": not contains((lo, hi), 1.0),
            "speedup_method": method}


def _baseline(variants: list[VariantResult], v: VariantResult) -> VariantResult | None:
    cands = [b for b in variants if b.status == "ok" and b.precision == "fp32" and b.sparsity == "dense"
             and b.batch_size == v.batch_size and b.timing is not None]
    same = [b for b in cands if b.backend == v.backend]
    return (same or cands or [None])[0]


@dataclass
class Report:
    """A benchmark report.

    Attributes:
        environment: From :func:`~trtopt.benchmark.capture_environment`.
        workload: Model/data description.
        variants: One entry per variant and batch size.
        created: ISO-8601 UTC timestamp.
        schema: Schema identifier.
    """

    environment: dict[str, Any]
    workload: dict[str, Any]
    variants: list[VariantResult]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema: str = SCHEMA

    def finalize(self) -> Report:
        """Fill every variant's ``vs_fp32`` against the dense FP32 variant at the same batch size.

        The baseline on the same backend is preferred. ``accuracy_delta`` is in the metric's
        units (percentage points for accuracies); ``speedup`` is a throughput ratio with its 95 %
        interval ``speedup_ci95`` (see :func:`speedup_of`) and ``speedup_significant`` (false when
        the interval contains 1.0, shown as ``≈1.0×``).

        Returns:
            ``self``.
        """
        for v in self.variants:
            base = _baseline(self.variants, v) if v.status == "ok" else None
            res: dict[str, Any] = {"accuracy_delta": None, "speedup": None, "speedup_ci95": None,
                                   "speedup_significant": None, "speedup_method": None,
                                   "baseline": base.name if base else None}
            if base is not None and v.timing is not None and base.timing.throughput_sps > 0:
                res.update(speedup_of(v.timing, base.timing))
                a, b = v.accuracy, base.accuracy
                if a is not None and b is not None and a.value is not None and b.value is not None:
                    res["accuracy_delta"] = a.value - b.value
            v.vs_fp32 = res
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the schema object (strict-JSON safe)."""
        return jsonable({"schema": self.schema, "created": self.created, "environment": self.environment,
                         "workload": self.workload, "variants": [v.to_dict() for v in self.variants]})


def check_schema(obj: Any, source: str = "report") -> dict[str, Any]:
    """Validate a report object; raise :class:`InputError` with the first problem.

    Args:
        obj: Parsed JSON.
        source: Name for messages (usually the file path).

    Returns:
        ``obj``.
    """
    if not isinstance(obj, dict) or "schema" not in obj:
        raise InputError(f"{source} is not a trtopt report (no 'schema' field)")
    schema = str(obj["schema"])
    name, _, ver = schema.partition("/")
    major = ver.split(".")[0]
    if name != "trtopt.report" or not major.isdigit():
        raise InputError(f"{source} has unknown schema '{schema}' (expected {SCHEMA})")
    if int(major) not in READABLE_MAJORS:
        readable = " and ".join(f"trtopt.report/{m}" for m in READABLE_MAJORS)
        raise InputError(f"{source} uses schema '{schema}'; this trtopt reads {readable} only "
                         f"({'upgrade trtopt' if int(major) > SCHEMA_MAJOR else 're-run the benchmark'})")
    for key in ("environment", "workload", "variants"):
        if key not in obj:
            raise InputError(f"{source} is missing the '{key}' field")
    if not isinstance(obj["variants"], list):
        raise InputError(f"{source}: 'variants' must be a list")
    for i, v in enumerate(obj["variants"]):
        missing = [k for k in VARIANT_KEYS if not isinstance(v, dict) or k not in v]
        if missing:
            raise InputError(f"{source}: variant #{i} is missing {', '.join(missing)}")
        if v["status"] not in STATUSES:
            raise InputError(f"{source}: variant '{v['name']}' has status '{v['status']}' (expected {STATUSES})")
        if v["status"] == "ok" and v["throughput_sps"] is None:
            raise InputError(f"{source}: variant '{v['name']}' is ok but has no throughput_sps")
    return obj


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a ``report.json``.

    Raises:
        InputError: Missing, unreadable, non-JSON or wrong-schema file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"report {p} is a directory" if p.is_dir() else f"report not found: {p}")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read report {p}: {exc}") from None
    return check_schema(obj, str(p))


def variant_key(v: dict[str, Any]) -> tuple[str, str, int]:
    """Identity of a report row: (name, backend, batch size)."""
    return (str(v["name"]), str(v["backend"]), int(v["batch_size"]))


def engine_failures(report: Report) -> list[str]:
    """``"variant: reason"`` (first line of the reason) per variant whose engine-column build failed.

    A variant benchmarked at several batch sizes is listed once.
    """
    out: dict[str, str] = {}
    for v in report.variants:
        if v.engine is not None and v.engine.status == "failed" and v.name not in out:
            reason = (v.engine.reason or v.engine.text or "unknown error").strip()
            out[v.name] = reason.splitlines()[0] if reason else "unknown error"
    return [f"{name}: {reason}" for name, reason in out.items()]


def strict_problems(report: Report) -> list[str]:
    """What ``--strict`` fails on (exit 1), the one rule of ``trtopt bench`` and ``trtopt run``.

    A variant is a problem when it failed, was skipped (asked for but not measured: a backend that
    is not installed, a 2:4 variant of an ``.onnx`` model), is outside its fidelity tolerance, or
    when its engine-column build failed.

    Returns:
        One short line per failed or out-of-tolerance variant and batch size, e.g. ``"int8@32
        (onnxruntime): fidelity outside tolerance (logits: cosine 0.41 < 0.99)"``, then
        ``"engine build failed: VARIANT: REASON"`` once per variant, then ``"VARIANT: skipped:
        REASON"`` once per variant and backend; empty when every variant is fine.
    """
    out, skipped = [], {}
    for v in report.variants:
        where = f"{v.name}@{v.batch_size} ({v.backend})"
        a = v.accuracy
        if v.status == "skipped":  # the same at every batch size: once
            skipped.setdefault((v.name, v.backend), f"{v.name}: skipped: {v.reason}")
        elif v.status == "failed":
            out.append(f"{where}: failed: {v.reason}")
        elif a is not None and (a.fidelity_ok is False or a.violations):
            bad = "; ".join(f"{o}: {', '.join(x)}" for o, x in (a.violations or {}).items())
            out.append(f"{where}: fidelity outside tolerance ({bad or 'fidelity_ok is false'})")
    return out + [f"engine build failed: {f}" for f in engine_failures(report)] + list(skipped.values())


def check_strict(report: Report) -> None:
    """``--strict`` of ``trtopt bench`` and ``trtopt run``: fail when :func:`strict_problems` finds any.

    Raises:
        GateFailure: Exit 1, naming every problem on one line.
    """
    problems = strict_problems(report)
    if problems:
        raise GateFailure(f"--strict: {len(problems)} variant(s) not ok: " + "; ".join(problems))
