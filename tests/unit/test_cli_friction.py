"""Issue 13 item 7 friction: closed pipes, directories reported as directories, install hints, plots,
and the one data format read by calibrate/quantize/bench with errors in words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.errors import InputError
from trtopt.optional import from_source, install_hint, missing_dependency

ROOT = Path(__file__).resolve().parents[2]


def _chain(path, layers):
    nodes, inits, src = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"y{i}"], name=f"/layer{i}/MatMul"))
        src = f"y{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info(src, TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def test_closed_pipe_exits_quietly_without_traceback(tmp_path):
    """`trtopt inspect sparsity --json | head -c 100`: >64 KiB to a reader that left (was a BrokenPipeError)."""
    model = _chain(tmp_path / "chain.onnx", 220)  # ~90 KiB of JSON: more than a pipe buffer
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = f"'{sys.executable}' -m trtopt.cli.main inspect sparsity '{model}' --json | head -c 100 > /dev/null"
    res = subprocess.run(["bash", "-c", f"{cmd}; exit ${{PIPESTATUS[0]}}"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr
    assert res.returncode == 141  # 128 + SIGPIPE, as a shell reports a closed pipe


@pytest.mark.parametrize("json_out", [False, True])
def test_closed_pipe_on_rich_output_is_not_exit_1(tmp_path, json_out):
    """rich's own closed-pipe handling exits 1, which `trtopt gate` uses for "regression": it must read 141."""
    model = _chain(tmp_path / "chain.onnx", 220)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flag = " --json" if json_out else ""
    cmd = f"'{sys.executable}' -m trtopt.cli.main inspect sparsity '{model}'{flag} | head -c 10 > /dev/null"
    res = subprocess.run(["bash", "-c", f"{cmd}; exit ${{PIPESTATUS[0]}}"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 141


def _dir_cases(d: Path):
    from trtopt.backends.onnxrt import OnnxRuntimeRunner
    from trtopt.benchmark.gate import load_overrides
    from trtopt.benchmark.report import load_report
    from trtopt.calib import NumpySource
    from trtopt.dataset import load_npz

    return {"report": lambda: load_report(d), "overrides": lambda: load_overrides(d),
            "onnxruntime model": lambda: OnnxRuntimeRunner(d).__enter__(), "data .npz": lambda: load_npz(d),
            "calibration .npz": lambda: NumpySource.from_npz(d)}


@pytest.mark.parametrize("what", ["report", "overrides", "onnxruntime model", "data .npz", "calibration .npz"])
def test_directories_are_not_reported_as_not_found(tmp_path, what):
    d = tmp_path / "thing.onnx"
    d.mkdir()
    with pytest.raises(InputError) as err:
        _dir_cases(d)[what]()
    assert "is a directory" in str(err.value) and "not found" not in str(err.value)


def test_bench_directory_model_and_data_say_directory(tmp_path, capsys):
    from trtopt.cli.main import main

    (tmp_path / "m.onnx").mkdir()
    assert main(["bench", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "o")]) == 2
    model = _chain(tmp_path / "c.onnx", 2)
    (tmp_path / "eval.npz").mkdir()
    assert main(["bench", model, "--data", str(tmp_path / "eval.npz"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("is a directory" in e and "not found" not in e for e in err), err


def test_install_hint_fits_the_install(tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages" / "trtopt"
    editable = json.dumps({"dir_info": {"editable": True}, "url": "file:///src/trtopt"})
    wheel = json.dumps({"archive_info": {}, "url": "file:///dl/trtopt-0.1.0-py3-none-any.whl"})
    assert from_source(tmp_path / "clone" / "trtopt", None)  # a checkout on PYTHONPATH / editable finder
    assert from_source(site, editable)
    assert not from_source(site, wheel) and not from_source(site, None)  # from a package index


def test_missing_extra_hint_in_this_checkout_is_editable():
    """This test runs from a source checkout: the hint is the clone's command, not the index's."""
    assert install_hint("tensorrt") == 'pip install -e ".[tensorrt]"'
    msg = str(missing_dependency("tensorrt"))
    assert 'pip install -e ".[tensorrt]"' in msg and "pip install 'trtopt[tensorrt]'" not in msg


def test_index_install_hint(monkeypatch):
    import trtopt.optional as opt

    monkeypatch.setattr(opt, "installed_from_source", lambda: False)
    assert "pip install 'trtopt[tensorrt]'" in str(missing_dependency("tensorrt"))


def _small_report():
    from trtopt.benchmark.report import Report, VariantResult
    from trtopt.benchmark.timing import TimingResult

    t = TimingResult.__new__(TimingResult)
    return Report(environment={}, workload={"name": "m"},
                  variants=[VariantResult("fp32", "onnxruntime", "fp32", status="skipped", reason="test")]), t


def test_stale_plots_are_removed_and_a_missing_matplotlib_is_said(tmp_path, monkeypatch):
    import trtopt.benchmark.plots as plots
    from trtopt.benchmark.report import write_report

    for name in plots.PLOT_FILES.values():
        (tmp_path / name).write_bytes(b"old png")
    monkeypatch.setattr(plots, "plots_available", lambda: False)
    report, _ = _small_report()
    write_report(report, tmp_path)
    assert not any((tmp_path / n).exists() for n in plots.PLOT_FILES.values())
    md = (tmp_path / "report.md").read_text()
    assert "plots skipped" in md and "matplotlib" in md


def test_matplotlib_is_a_base_dependency():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("matplotlib") for d in deps)


def test_contributor_notes_are_not_user_docs():
    assert not (ROOT / "docs" / "CONTRIBUTING-helpers.md").exists()


@pytest.mark.parametrize("content,words", [
    (lambda p: np.save(p, np.zeros(3)), "not a .npz archive"),
    (lambda p: p.write_bytes(b"garbage"), "not a readable .npz"),
    (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "not a readable .npz"),
    (lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object)), "pickled"),
])
def test_calibration_npz_errors_in_words(tmp_path, content, words):
    from trtopt.calib import NumpySource

    p = tmp_path / "calib.npz"
    content(p)
    if not p.exists():  # np.save appends .npy
        (tmp_path / "calib.npz.npy").rename(p)
    with pytest.raises(InputError) as err:
        NumpySource.from_npz(p)
    msg = str(err.value)
    assert "calib.npz" in msg and words in msg and "Error" not in msg  # no exception type names


def test_calibration_npz_static_and_labels_still_work(tmp_path):
    from trtopt.calib import NumpySource

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(6), **{"static:h": np.zeros((1, 3), np.float32)})
    src = NumpySource.from_npz(tmp_path / "d.npz", batch_size=4, seed=None)
    assert set(src.arrays) == {"x"} and set(src.static_inputs) == {"h"}
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in src]), x)
