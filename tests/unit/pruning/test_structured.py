"""Structured pruning keeps the network consistent through residual adds, concats, depthwise groups and BN."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from trtopt.errors import ConfigError  # noqa: E402
from trtopt.pruning import StructuredConfig  # noqa: E402
from trtopt.pruning.api import prune_dense  # noqa: E402


class Branchy(nn.Module):
    """Stem, a residual block, a concat of a plain and a depthwise-separable branch, BN, an MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.res1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.res2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.plain = nn.Conv2d(16, 16, 1)
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 16, 1))
        self.post = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res2(self.res1(x)))
        x = self.post(torch.cat([self.plain(x), self.dw(x)], 1))
        return self.head(x.mean((2, 3)))


def _pruned(**kw):
    torch.manual_seed(0)
    model = Branchy().eval()
    for m in model.modules():  # non-trivial BN statistics so a wrong channel shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.2, 1.5)
    x = np.random.default_rng(0).standard_normal((4, 3, 12, 12)).astype(np.float32)
    result = prune_dense(model, StructuredConfig(**kw), {"input": x[:1]})
    return model, result, x


def test_pruned_network_is_consistent_through_residual_concat_depthwise_and_bn():
    model, result, x = _pruned(target_macs=0.5, protect_stem=False)
    assert result.macs_after <= 0.5 * result.macs_before and result.params_after < result.params_before
    out = model(torch.from_numpy(x))
    assert out.shape == (4, 10)
    # residual add: the stem and the block's last conv keep the same (smaller) channel count
    assert model.stem[0].out_channels == model.res2[0].out_channels < 16
    # depthwise: groups follow the channels; the concat feeds BN and the next conv with the sum of both branches
    dw = model.dw[0]
    assert dw.groups == dw.in_channels == dw.out_channels == model.dw[1].num_features < 16
    cat = model.plain.out_channels + model.dw[3].out_channels
    assert model.post[0].num_features == model.post[2].in_channels == cat < 32
    assert model.head[2].out_features == 10  # the classifier's outputs are protected
    changes = {c.name: c for c in result.layers}
    assert changes["dw.0"].after == (dw.in_channels, dw.out_channels) and changes["dw.0"].before == (16, 16)


def test_protected_stem_keeps_its_channels_and_the_residual_stream():
    model, result, _ = _pruned(target_macs=0.6, protect=("post.*",))
    assert model.stem[0].out_channels == 16 == model.res2[0].out_channels  # coupled to the protected stem
    assert model.post[2].out_channels == 32  # user pattern
    assert any(c.changed for c in result.layers)


def test_pruned_model_exports_to_onnx_that_matches_pytorch(tmp_path):
    from trtopt.export import export_onnx

    model, _, x = _pruned(target_macs=0.5, protect_stem=False, importance="bn_scale", global_ranking=True)
    path = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "p.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [{"target_macs": 0}, {"target_macs": 1.0}, {"importance": "l3"},
                                {"max_layer_ratio": 1.5}, {"round_to": 0}, {"protect": ("re:[",)}])
def test_bad_structured_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        StructuredConfig(**kw)


def test_import_trtopt_and_the_pruning_package_loads_no_torch_pruning():
    code = ("import sys, trtopt, trtopt.pruning, trtopt.pruning.api, trtopt.cli.main; trtopt.cli.main.build_parser(); "
            "print(sorted(m for m in ('torch_pruning', 'torch') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
