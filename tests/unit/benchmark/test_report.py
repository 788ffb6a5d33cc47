"""Report model: vs_fp32, schema validation/version rejection, JSON/Markdown writing, table."""

from __future__ import annotations

import json

import pytest

from _helpers.reports import make_report
from trtopt.benchmark import (
    SCHEMA,
    VariantResult,
    capture_environment,
    check_schema,
    load_report,
    render_table,
    write_report,
)
from trtopt.errors import InputError


def test_vs_fp32_uses_same_batch_dense_fp32_baseline():
    r = make_report().finalize()
    by = {(v.name, v.batch_size): v.vs_fp32 for v in r.variants}
    assert by[("fp32", 8)] == {"accuracy_delta": 0.0, "speedup": pytest.approx(1.0), "baseline": "fp32",
                               "speedup_ci95": [1.0, 1.0], "speedup_significant": False,
                               "speedup_method": "same variant"}
    assert by[("int8", 8)]["speedup"] == pytest.approx(2.0)
    assert by[("int8", 8)]["accuracy_delta"] == pytest.approx(-0.5)
    assert by[("int8", 32)]["speedup"] == pytest.approx(1.5)
    assert by[("int8", 8)]["speedup_ci95"] is None and by[("int8", 8)]["speedup_method"] == "point"  # sequential
    assert by[("trt-int8", 8)] == {"accuracy_delta": None, "speedup": None, "baseline": None, "speedup_ci95": None,
                                   "speedup_significant": None, "speedup_method": None}


def test_skipped_variant_needs_reason_and_has_null_numbers():
    with pytest.raises(InputError, match="no reason"):
        VariantResult("x", "torch", "fp16", "dense", 1, None, None, None, "skipped", "")
    d = make_report().finalize().to_dict()
    skipped = next(v for v in d["variants"] if v["status"] == "skipped")
    assert skipped["throughput_sps"] is None and skipped["latency_ms"] is None and skipped["accuracy"] is None
    assert skipped["reason"] == "tensorrt is not installed"


def test_to_dict_is_strict_json_and_validates():
    d = make_report().finalize().to_dict()
    text = json.dumps(d, allow_nan=False)  # inf SQNR must not produce invalid JSON
    back = json.loads(text)
    assert back["variants"][1]["fidelity"]["logits"]["sqnr_db"] == "inf"
    assert back["schema"] == SCHEMA == "trtopt.report/2"
    v = back["variants"][0]
    for key in ("name", "backend", "precision", "sparsity", "batch_size", "throughput_sps", "latency_ms",
                "accuracy", "vs_fp32", "artifact", "status", "reason"):
        assert key in v
    assert set(v["latency_ms"]) == {"p50", "p90", "p99", "mean", "std"}
    assert set(v["timing"]) >= {"mode", "iterations", "cv", "warmup", "threads", "unstable"}
    assert check_schema(back) is back


@pytest.mark.parametrize("schema,msg", [("trtopt.report/3", "reads trtopt.report/1 and trtopt.report/2 only"),
                                        ("trtopt.report/0.9", "reads trtopt.report/1 and trtopt.report/2 only"),
                                        ("other/1", "unknown schema")])
def test_other_schema_versions_are_rejected(tmp_path, schema, msg):
    d = make_report().finalize().to_dict()
    d["schema"] = schema
    p = tmp_path / "r.json"
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match=msg):
        load_report(p)


def test_minor_version_is_accepted_and_broken_files_rejected(tmp_path):
    d = make_report().finalize().to_dict()
    d["schema"] = "trtopt.report/1.3"
    (tmp_path / "a.json").write_text(json.dumps(d))
    assert load_report(tmp_path / "a.json")["schema"] == "trtopt.report/1.3"
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        load_report(tmp_path / "b.json")
    del d["variants"][0]["throughput_sps"]
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="missing throughput_sps"):
        load_report(tmp_path / "c.json")
    with pytest.raises(InputError, match="not found"):
        load_report(tmp_path / "nope.json")


def test_write_report_writes_json_markdown_and_plots(tmp_path):
    paths = write_report(make_report(), tmp_path / "out")
    data = load_report(paths["json"])
    assert data["variants"][1]["vs_fp32"]["speedup"] == pytest.approx(2.0)  # finalized on write
    md = paths["markdown"].read_text()
    assert "| int8 | onnxruntime | int8 | dense | 8 | 2,000.0 |" in md
    assert "2.00×" in md and "-0.50" in md
    assert "trt-int8 (skipped: tensorrt is not installed)" in md
    assert "## Fidelity against FP32" in md and "| int8 | 8 | — | logits | 99.00 |" in md
    assert "TestCPU" in md
    pytest.importorskip("matplotlib")
    for key in ("plot_pareto", "plot_latency", "plot_batch"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
        assert f"]({paths[key].name})" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_render_table_columns_and_rows():
    t = render_table(make_report().finalize())
    headers = [c.header for c in t.columns]
    for col in ("variant", "backend", "precision", "sparsity", "samples/s (95% CI)", "p50 ms", "p99 ms", "accuracy",
                "Δ vs FP32", "speedup vs FP32 (95% CI)"):
        assert col in headers
    assert t.row_count == 5


def test_capture_environment_has_required_fields_without_importing_tensorrt():
    import sys

    env = capture_environment()
    assert env["cpu"]["logical_cores"] >= 1 and "flags" in env["cpu"]
    assert {"torch", "onnx", "onnxruntime", "tensorrt"} <= set(env["packages"])
    assert env["python"] and env["os"] and isinstance(env["gpus"], list)
    assert "tensorrt" not in sys.modules
    json.dumps(env, allow_nan=False)


def test_gpu_fields_are_parsed_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\nif [ -n "$1" ]; then\n'
                   '  echo "NVIDIA H100 80GB HBM3, 550.54.15, 9.0, 81559, 1980, 2619, 1980, 2619, 700.00, Enabled"\n'
                   'else\n  echo "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |"\nfi\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    g = capture_environment()["gpus"]
    assert g == [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "cuda_driver_version": "12.4",
                  "compute_capability": "9.0", "memory_mib": "81559",
                  "clocks_mhz": {"sm": "1980", "mem": "2619", "max_sm": "1980", "max_mem": "2619"},
                  "power_limit_w": "700.00", "persistence_mode": "Enabled"}]


def test_a_plot_that_fails_is_a_warning_and_the_report_is_kept(tmp_path, monkeypatch, caplog):
    pytest.importorskip("matplotlib")
    from trtopt.benchmark import plots

    def broken(plt, variants, dest):
        plt.figure()  # a figure left open by the failure is closed
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(plots, "_latency", broken)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "latency.png").write_bytes(b"\x89PNG old")  # from an older run
    import matplotlib.pyplot as plt

    open_before = set(plt.get_fignums())
    with caplog.at_level("WARNING", logger="trtopt"):
        paths = write_report(make_report(), tmp_path / "out")
    assert load_report(paths["json"])["variants"][0]["name"] == "fp32"
    md = paths["markdown"].read_text()
    assert "plots not written: latency.png: ValueError: 'yerr' must not contain negative values" in md
    assert "](pareto.png)" in md and paths["plot_pareto"].is_file()  # the other plots are still drawn
    assert "plot_latency" not in paths and not (tmp_path / "out" / "latency.png").exists()
    assert any("latency.png" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert set(plt.get_fignums()) <= open_before
