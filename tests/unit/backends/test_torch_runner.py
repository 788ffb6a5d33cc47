"""TorchRunner (PyTorch eager backend) on CPU; CUDA paths are marked gpu."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trtopt.backends import open_runner  # noqa: E402
from trtopt.backends.torch_runner import TorchRunner  # noqa: E402
from trtopt.benchmark import BenchConfig, evaluate, measure  # noqa: E402
from trtopt.errors import BackendUnavailableError, ConfigError, InputError  # noqa: E402


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


X = np.random.default_rng(0).normal(size=(6, 1, 4, 4)).astype(np.float32)


def test_fp32_matches_the_module_and_does_not_mutate_it():
    net = _net()
    with torch.no_grad():
        want = net(torch.from_numpy(X)).numpy()
    with open_runner("torch", net, device="cpu", input_shape=(None, 1, 4, 4)) as r:
        out = r.infer({"input": X})
        assert r.describe()["device"] == "cpu" and r.output_specs()[0].name == "logits"
    np.testing.assert_allclose(out["logits"], want, rtol=1e-5, atol=1e-6)
    assert next(net.parameters()).dtype == torch.float32


def test_bf16_is_close_and_measure_runs_on_cpu():
    net = _net()
    with TorchRunner(net, precision="bf16", device="cpu", input_shape=(None, 1, 4, 4)) as r:
        ref = evaluate(r, X, batch_size=4)
        t = measure(r, {"input": X[:2]}, BenchConfig(warmup=1, iterations=3), batch_size=2)
    assert t.mode == "cpu" and t.iterations == 3 and t.threads >= 1
    with torch.no_grad():
        want = net(torch.from_numpy(X)).numpy()
    assert np.abs(ref.outputs - want).max() < 0.1


def test_pt_file_and_bad_inputs(tmp_path):
    p = tmp_path / "net.pt"
    torch.save(_net(), p)
    with TorchRunner(str(p), device="cpu", input_shape=(None, 1, 4, 4)) as r:
        assert r.infer({"input": X})["logits"].shape == (6, 10)
        with pytest.raises(InputError, match="rank"):
            r.infer({"input": X[0]})
    with pytest.raises(InputError, match="not ONNX"):
        TorchRunner("model.onnx").__enter__()
    with pytest.raises(InputError, match="unknown torch model"):
        TorchRunner("no_such_workload").__enter__()
    with pytest.raises(ConfigError):
        TorchRunner(_net(), precision="int8")


def test_sparse24_needs_cuda():
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        TorchRunner(_net(), device="cpu", precision="fp16", sparse24=True).__enter__()


@pytest.mark.gpu
def test_cuda_modes_and_sparse24():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Linear):
                w = m.weight.view(-1, 4)
                w[:, :2] = 0  # 2:4 along the input axis
    x = np.random.default_rng(0).normal(size=(64, 128)).astype(np.float32)
    with TorchRunner(net, precision="fp16", device="cuda", sparse24=True, input_shape=(None, 128)) as r:
        cfg = BenchConfig(warmup=2, iterations=5)
        for mode in ("gpu-no-transfer", "gpu-e2e", "cuda-graph"):
            assert measure(r, {"input": x}, cfg, mode=mode).mode == mode
        out = r.infer({"input": x})["logits"]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.abs(out - want).max() < 0.05
