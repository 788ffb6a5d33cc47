"""Each stage the CLI runs and the recipe runs makes the same artifact from the same inputs.

The quantize modes (int8, int8-fp16, fp16) are checked in ``tests/unit/quant/test_quant_api.py``, the bench
session in ``tests/unit/benchmark/test_bench_session.py``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from trtopt.cli.main import main  # noqa: E402
from trtopt.inputs import parse_input_specs  # noqa: E402
from trtopt.recipe import recipe_from_dict  # noqa: E402

SPEC = "x:float32:batchx32"


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))


def _pipeline(tmp_path, tables: dict):
    from trtopt.pipeline import Pipeline

    return Pipeline(recipe_from_dict(tables), tmp_path / "run")


def _workload(model, x):
    return SimpleNamespace(onnx_path=None, model=model, calib={"x": x}, as_feeds=lambda d: d,
                           count=lambda d: len(next(iter(d.values()))), train_x=None, specs=parse_input_specs([SPEC]),
                           outputs=("output",))


def test_prune_sparsegpt_makes_the_same_masks_from_the_cli_and_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(_net(), "net.pt")
    x = np.random.default_rng(0).standard_normal((100, 32)).astype(np.float32)  # two batches of SparseGPT's 64
    np.savez("calib.npz", x=x)
    assert main(["prune", "--module", "net.pt", "--input", SPEC, "--method", "sparsegpt", "--calib", "calib.npz",
                 "--out-module", "cli.pt"]) == 0
    cli = torch.load("cli.pt", weights_only=False)
    pipe = _pipeline(tmp_path, {"recipe": {"variants": ["fp32", "sparse24-fp32"]}, "prune": {"method": "sparsegpt"}})
    recipe = pipe._torch_models(_workload(_net(), x))["sparse"]
    for (name, a), (_, b) in zip(cli.state_dict().items(), recipe.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_export_makes_the_same_onnx_from_the_cli_and_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(_net(), "net.pt")
    assert main(["export", "--module", "net.pt", "--input", SPEC, "--out", "cli.onnx"]) == 0
    pipe = _pipeline(tmp_path, {})
    x = np.zeros((4, 32), np.float32)
    path = pipe._export(_workload(torch.load("net.pt", weights_only=False), x), {"dense": _net()})["dense"]
    assert onnx.load("cli.onnx").graph.SerializeToString() == onnx.load(path).graph.SerializeToString()


def test_calibrate_makes_the_same_table_from_the_cli_and_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(_net(), "net.pt")
    assert main(["export", "--module", "net.pt", "--input", SPEC, "--out", "m.onnx"]) == 0
    x = np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32)
    np.savez("calib.npz", x=x)
    assert main(["calibrate", "m.onnx", "--data", "calib.npz", "--collector", "onnxruntime", "--out", "cal"]) == 0
    cli = json.loads((tmp_path / "cal" / "m.calib.json").read_text())
    pipe = _pipeline(tmp_path, {"recipe": {"variants": ["fp32", "int8"]}, "calibrate": {"collector": "onnxruntime"}})
    tables = pipe._calibrate(_workload(None, x), {"dense": tmp_path / "m.onnx"})
    assert cli["amax"] == json.loads((tmp_path / "run" / "calibration" / "dense.calib.json").read_text())["amax"]
    assert set(tables) == {"dense"}


@pytest.mark.tensorrt_rtx
def test_build_makes_the_same_engine_from_the_cli_and_the_recipe(tmp_path, monkeypatch):
    """``trtopt build`` and the recipe's engine column: same precision, profile, builder plan and INT8 layers."""
    pytest.importorskip("tensorrt_rtx")
    from trtopt.run.engines import engine_column

    monkeypatch.chdir(tmp_path)
    spec = "x:float32:batch=1..4..8x32"
    torch.save(_net(), "net.pt")
    np.savez("calib.npz", x=np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32))
    for argv in (["export", "--module", "net.pt", "--input", spec, "--out", "m.onnx"],
                 ["calibrate", "m.onnx", "--data", "calib.npz", "--method", "minmax", "--out", "cal"],
                 ["quantize", "m.onnx", "--calib", "cal/m.calib.json", "--out", "q.onnx", "--no-fidelity-guard"],
                 ["build", "q.onnx", "--backend", "tensorrt-rtx", "--input", spec, "--engine-dir", "cli"]):
        assert main(argv) == 0, argv
    cli = json.loads(next((tmp_path / "cli").glob("*.json")).read_text())
    cell = engine_column("t", "int8", tmp_path / "q.onnx", tmp_path / "recipe", parse_input_specs([spec]))
    assert cell.status == "ok", cell.text
    recipe = json.loads(next((tmp_path / "recipe").glob("*.json")).read_text())

    def what(m):
        prof = {k: (v["min"], v["opt"], v["max"]) for k, v in m["profiles"].items()}
        plan = {k: m["build"]["plan"][k] for k in ("strongly_typed", "network_flags", "builder_flags", "cleared_flags")}
        c = m["compiled"]
        return m["build"]["precision"]["built"], prof, plan, (c["quantized"], c["int8"], c["compute_precisions"])

    assert what(cli) == what(recipe) == ("int8", {"x": ([1, 32], [4, 32], [8, 32])}, what(cli)[2], (2, 2, {"INT8": 2}))
