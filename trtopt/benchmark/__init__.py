"""Benchmark: throughput/latency timing, accuracy and fidelity against FP32, reports, plots and the gate.

Typical use (what the pipeline does)::

    cfg = BenchConfig(warmup=5, min_duration_s=1.0, batch_sizes=(32,))
    with open_runner("onnxruntime", "model.onnx") as r:
        timing = measure(r, {"input": x[:32]}, cfg, batch_size=32)
        acc = evaluate(r, x, labels=y, reference=fp32_logits, batch_size=64, input_name="input")
    report = Report(environment=capture_environment(), workload={...}, variants=[VariantResult(...)])
    report.finalize()
    write_report(report, out_dir)

Importing this package imports numpy only; torch, matplotlib and rich are imported on use.
"""

from __future__ import annotations

from trtopt.benchmark.accuracy import (
    DEFAULT_TOLERANCE,
    AccuracyResult,
    ChannelSplit,
    Tolerance,
    evaluate,
    fidelity,
    register_metric,
    run_batched,
    topk_accuracy,
)
from trtopt.benchmark.config import TIMING_MODES, BenchConfig
from trtopt.benchmark.environment import capture_environment
from trtopt.benchmark.gate import Budget, GateResult, gate, load_overrides
from trtopt.benchmark.layerwise import LayerError, compare_layers
from trtopt.benchmark.render import render_markdown, render_table
from trtopt.benchmark.report import SCHEMA, EngineCell, Report, VariantResult, check_schema, load_report
from trtopt.benchmark.timing import TimingResult, latency_stats, measure, summarize
from trtopt.benchmark.write import write_report

__all__ = [
    "DEFAULT_TOLERANCE", "SCHEMA", "TIMING_MODES", "AccuracyResult", "BenchConfig", "Budget", "ChannelSplit",
    "EngineCell",
    "GateResult", "LayerError", "Report",
    "TimingResult", "Tolerance", "VariantResult", "capture_environment", "check_schema", "compare_layers",
    "evaluate", "fidelity", "gate", "latency_stats", "load_overrides", "load_report", "measure",
    "register_metric", "render_markdown", "render_table", "run_batched", "summarize", "topk_accuracy",
    "write_report",
]
