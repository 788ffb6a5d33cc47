"""``trtopt prune`` end to end on a saved module: masks, ONNX with the pattern intact, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


def Net():  # a plain Sequential: a pickled test-module class would not load in the CLI subprocess
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trtopt", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune")
    torch.manual_seed(0)
    torch.save(Net(), d / "net.pt")
    res = _cli("prune", "--module", str(d / "net.pt"), "--input-shape", "1,32", "--out-masks", str(d / "m.pt"),
               "--onnx", str(d / "net.onnx"), "--report", str(d / "r.json"), "--json", cwd=d)
    assert res.returncode == 0, res.stderr
    return d, json.loads(res.stdout)


def test_prune_cli_writes_masks_onnx_and_report(pruned):
    d, data = pruned
    assert data["summary"]["pruned"] == 2
    assert json.loads((d / "r.json").read_text())["summary"] == data["summary"]
    res = _cli("inspect", "sparsity", str(d / "net.onnx"), "--json", "--gpu", "a100")
    rep = json.loads(res.stdout)
    assert rep["summary"]["compliant"] == 2 and rep["summary"]["sparse_flop_share"] == 1.0
    assert sorted(p.name for p in d.iterdir()) == ["m.pt", "net.onnx", "net.pt", "r.json"]  # no temp files


def test_prune_cli_applies_a_mask_file(pruned, tmp_path):
    d, _ = pruned
    res = _cli("prune", "--module", str(d / "net.pt"), "--masks", str(d / "m.pt"), "--out-module",
               str(tmp_path / "p.pt"))
    assert res.returncode == 0, res.stderr
    from trtopt.sparsity import check_2to4

    model = torch.load(tmp_path / "p.pt", weights_only=False)
    assert check_2to4(model[0].weight) and check_2to4(model[2].weight)
    assert f"wrote pruned module: {tmp_path / 'p.pt'}" in res.stdout  # the text summary names what it wrote


def test_prune_cli_bad_inputs(pruned, tmp_path):
    d, _ = pruned
    other = torch.nn.Sequential(torch.nn.Linear(32, 64))
    torch.save(other, tmp_path / "other.pt")
    line = _one_error_line(_cli("prune", "--module", str(tmp_path / "other.pt"), "--masks", str(d / "m.pt")))
    assert "does not match the model" in line
    assert "only 2:4" in _one_error_line(_cli("prune", "--module", str(d / "net.pt"), "--pattern", "4:8"))
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 5)), tmp_path / "tiny.pt")
    assert "no layer is eligible" in _one_error_line(_cli("prune", "--module", str(tmp_path / "tiny.pt")))
    assert "calibration" in _one_error_line(_cli("prune", "--module", str(d / "net.pt"), "--method", "sparsegpt"))
