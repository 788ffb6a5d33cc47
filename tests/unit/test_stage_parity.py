"""Each stage the CLI runs and the recipe runs makes the same artifact from the same inputs.

The quantize modes (int8, int8-fp16, fp16) are checked in ``tests/unit/quant/test_quant_api.py``.
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
