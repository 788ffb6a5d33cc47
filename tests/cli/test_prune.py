"""``trtopt prune`` end to end on a saved module: 2:4 masks and ONNX with the pattern intact; structured / low-rank /
unstructured: a smaller dense ONNX, the ✗ verdict; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from trtopt.optional import is_installed  # noqa: E402


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


# -- dense methods: structured, lowrank, unstructured ------------------------------------------------------------

needs_torch_pruning = pytest.mark.skipif(not is_installed("torch_pruning"), reason="the [prune] extra is not installed")


def ConvNet():  # a plain Sequential: a pickled test-module class would not load in the CLI subprocess
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 10))


def _dense(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trtopt", "prune", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def dense_net(tmp_path_factory):
    d = tmp_path_factory.mktemp("dense")
    torch.manual_seed(0)
    model = ConvNet().eval()
    torch.save(model, d / "net.pt")
    x = np.random.default_rng(0).standard_normal((96, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():  # labels the dense model gets right: its accuracy is 100 %
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(d / "train.npz", input=x, labels=y)
    return d, x


@needs_torch_pruning
def test_structured_cli_writes_a_smaller_onnx_that_matches_and_a_report(dense_net, tmp_path):
    d, x = dense_net
    res = _dense("--module", str(d / "net.pt"), "--input", "input:float32:batchx3x8x8", "--method", "structured",
               "--target-macs", "0.5", "--onnx", str(tmp_path / "s.onnx"), "--out-module", str(tmp_path / "s.pt"),
               "--report", str(tmp_path / "r.json"), "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["method"] == "structured" and rep["macs_ratio"] <= 0.5 and rep["params_after"] < rep["params_before"]
    assert json.loads((tmp_path / "r.json").read_text())["macs_after"] == rep["macs_after"]
    layers = {c["name"]: c for c in rep["layers"]}
    assert layers["3"]["after"][1] < layers["3"]["before"][1] and layers["9"]["after"][1] == 10
    onnx.checker.check_model(str(tmp_path / "s.onnx"), full_check=True)
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    model = torch.load(tmp_path / "s.pt", weights_only=False)
    with torch.no_grad():
        want = model(torch.from_numpy(x[:4])).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x[:4]})[0], want, rtol=1e-4, atol=1e-4)


def test_lowrank_cli_reports_the_rank_per_layer(dense_net, tmp_path):
    d, _ = dense_net
    res = _dense("--module", str(d / "net.pt"), "--input-shape", "1,3,8,8", "--method", "lowrank", "--target-macs",
               "0.5", "--onnx", str(tmp_path / "l.onnx"), "--json")
    assert res.returncode == 0, res.stderr
    ranks = {c["name"]: c["rank"] for c in json.loads(res.stdout)["layers"]}
    assert ranks["7"] == 8 and ranks["0"] is None  # 32x32: r = floor(0.5 * 32*32 / 64); the 3x3 convs stay dense
    onnx.checker.check_model(str(tmp_path / "l.onnx"), full_check=True)


def test_unstructured_cli_says_it_is_not_faster(dense_net):
    d, _ = dense_net
    res = _dense("--module", str(d / "net.pt"), "--input-shape", "1,3,8,8", "--method", "unstructured",
                 "--amount", "0.7")
    assert res.returncode == 0, res.stderr
    assert "do not make TensorRT or ONNX Runtime faster" in res.stdout


@needs_torch_pruning
def test_a_model_that_loses_the_task_fails_and_is_saved_only_when_asked(dense_net, tmp_path):
    d, _ = dense_net
    args = ("--module", str(d / "net.pt"), "--input-shape", "1,3,8,8", "--data", str(d / "train.npz"), "--method",
            "structured", "--target-macs", "0.03", "--max-layer-ratio", "0.95", "--prune-stem", "--onnx",
            str(tmp_path / "f.onnx"))
    res = _dense(*args)
    assert res.returncode == 1 and "✗" in res.stdout and "nothing saved" in res.stderr, res.stderr
    assert not (tmp_path / "f.onnx").exists()
    res = _dense(*args, "--keep-failed")
    assert res.returncode == 0 and (tmp_path / "f.onnx").is_file(), res.stderr


@pytest.mark.parametrize("extra, needle", [
    (("--method", "structured", "--target-macs", "1.5"), "target_macs must be in (0, 1)"),
    (("--method", "structured", "--out-masks", "m.pt"), "--out-masks applies only to 2:4"),
    (("--method", "magnitude", "--steps", "2"), "--steps applies only to structured"),
    (("--method", "lowrank", "--energy", "0.5", "--target-macs", "0.5"), "give one"),
    (("--method", "structured", "--include", "0"), "--protect"),
    (("--method", "lowrank", "--amount", "0.5"), "--amount applies to --method unstructured"),
    (("--method", "structured", "--steps", "0"), "steps must be a positive integer"),
    (("--method", "lowrank", "--kd-alpha", "2"), "kd_alpha must be in [0, 1]"),
    (("--method", "structured", "--finetune-epochs", "1"), "needs training data"),
])
def test_bad_dense_options_end_in_one_line(dense_net, tmp_path, extra, needle):
    d, _ = dense_net
    res = _dense("--module", str(d / "net.pt"), "--input-shape", "1,3,8,8", *extra, cwd=tmp_path)
    assert needle in _one_error_line(res)


def test_structured_without_the_extra_names_it(dense_net):
    d, _ = dense_net
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch_pruning":
                    raise ImportError("blocked")
        sys.meta_path.insert(0, Block())
        from trtopt.cli.main import main
        sys.exit(main(["prune", "--module", {str(d / "net.pt")!r}, "--input-shape", "1,3,8,8",
                       "--method", "structured"]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "[prune]" in _one_error_line(res)
