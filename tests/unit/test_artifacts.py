"""A pipeline run's output folder holds that run's artifacts or the previous run's: never half a run, never stale."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.user_project import FAST_BENCH

pytest.importorskip("onnxruntime")

from _helpers.paths import REPO_ROOT as ROOT
from trtopt.artifacts import PREVIOUS, RunOutput
from trtopt.errors import ConfigError
from trtopt.pipeline import run_recipe


def _mlp(path: Path, seed: int) -> Path:
    """x [N, 8] -> MatMul -> Relu -> MatMul -> y [N, 4]; the weights depend on ``seed``."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _recipe(model: Path, variants: list[str], bench: dict | None = None) -> dict:
    return {"recipe": {"name": "t", "variants": variants}, "workload": {"model": str(model)},
            "bench": bench or FAST_BENCH}


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_run(tmp_path: Path, model: Path, out: Path) -> subprocess.CompletedProcess:
    """``trtopt run`` in a subprocess, sent SIGINT once it has written models and tables and is timing."""
    recipe = tmp_path / "long.toml"
    recipe.write_text(f'[recipe]\nname = "t"\nvariants = ["fp32", "fp16", "int8"]\n[workload]\nmodel = "{model}"\n'
                      "[bench]\nbatch_sizes = [4]\nwarmup = 1\nmin_duration_s = 600.0\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "trtopt", "run", str(recipe), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:  # progress lines: the timing stage comes after every model and table is written
        seen.append(line)
        if "timing" in line:
            break
    assert (out / "models" / "fp16.onnx").is_file(), "".join(seen)  # the run did write artifacts
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, "".join(seen) + stderr)


def test_ctrl_c_during_a_run_exits_130_and_removes_everything_it_wrote(tmp_path):
    out = tmp_path / "out"
    res = _interrupt_run(tmp_path, _mlp(tmp_path / "a.onnx", 0), out)
    assert res.returncode == 130, res.stderr
    assert "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))  # no models/, calibration/, report


def test_ctrl_c_during_a_rerun_leaves_the_previous_run_as_it_was(tmp_path):
    out = tmp_path / "out"
    run_recipe(_recipe(_mlp(tmp_path / "a.onnx", 0), ["fp32", "fp16", "int8"]), out)
    (out / "notes.txt").write_text("mine")  # a user's file in the folder is not the run's
    before = _tree(out)
    res = _interrupt_run(tmp_path, _mlp(tmp_path / "b.onnx", 1), out)
    assert res.returncode == 130, res.stderr
    assert _tree(out) == before  # same files, same bytes: the complete earlier run, no half of the new one


def test_a_rerun_keeps_no_artifact_of_the_previous_run(tmp_path):
    """fp16.onnx of model a must not sit beside the report of model b (nor any other file of run a)."""
    out = tmp_path / "out"
    run_recipe(_recipe(_mlp(tmp_path / "a.onnx", 0), ["fp32", "fp16", "int8"]), out)
    int8_a = (out / "models" / "int8.onnx").read_bytes()
    result = run_recipe(_recipe(_mlp(tmp_path / "b.onnx", 1), ["fp32", "int8"]), out)
    assert not (out / "models" / "fp16.onnx").exists()
    assert (out / "models" / "int8.onnx").read_bytes() != int8_a  # b's, written by this run
    names = {v["name"] for v in result.report.to_dict()["variants"]}
    assert names == {"fp32", "int8"} and not (out / PREVIOUS).exists()


def test_a_run_whose_input_is_its_own_artifact_is_refused_before_anything_moves(tmp_path):
    out = tmp_path / "out"
    run_recipe(_recipe(_mlp(tmp_path / "a.onnx", 0), ["fp32", "fp16"]), out)
    before = _tree(out)
    with pytest.raises(ConfigError, match="is the input file"):
        run_recipe(_recipe(out / "models" / "fp16.onnx", ["fp32"]), out)
    assert _tree(out) == before


def test_a_run_killed_outright_is_undone_by_the_next_one(tmp_path):
    """SIGKILL leaves the previous run aside: the next run restores it before it starts."""
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "report.json").write_text("old report")
    (out / "models" / "fp16.onnx").write_text("old fp16")
    killed = RunOutput(out, ["report.json", "models/fp16.onnx", "models/int8.onnx"], ["models"])
    killed.__enter__()  # the killed run moved the old files aside and wrote half a run
    (out / "models" / "int8.onnx").write_text("half-run int8")
    with pytest.raises(KeyboardInterrupt), RunOutput(out, killed.artifacts, ["models"]):
        assert (out / "report.json").is_file() is False  # moved aside again for this run
        raise KeyboardInterrupt
    assert _tree(out) == {"report.json": hashlib.sha256(b"old report").hexdigest(),
                          "models/fp16.onnx": hashlib.sha256(b"old fp16").hexdigest()}


def test_rollback_removes_new_files_and_created_folders_only(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user")
    with pytest.raises(RuntimeError), RunOutput(out, ["report.json", "models/a.onnx"], ["models", "engines"]):
        (out / "models" / "sub").mkdir(parents=True)
        (out / "models" / "a.onnx").write_text("x")
        (out / "models" / "sub" / ".a.onnx.123.tmp").write_text("partial")
        (out / "report.json").write_text("{}")
        raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

