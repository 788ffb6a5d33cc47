"""The command line as a whole: a closed pipe exits quietly, directories are reported as directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.paths import REPO_ROOT as ROOT
from trtopt.backends.onnxrt import OnnxRuntimeRunner
from trtopt.cli.main import main
from trtopt.errors import InputError


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


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "missing.toml"], "recipe not found"),
        (["bench", "missing.onnx"], "missing.onnx"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing half-written
