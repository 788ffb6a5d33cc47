"""prune_: eligibility, the three methods, permutation invariance, ONNX export keeps the pattern."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.sparsity import PruneConfig, check_2to4, prune_  # noqa: E402
from trtopt.sparsity.permutation import permute_for_sparsity_, search_permutation  # noqa: E402


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(32, 32)
        self.odd = nn.Linear(32, 6)
        self.fc2 = nn.Linear(6, 10)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = self.bn1(self.conv(x)).relu()
        x = self.flat(self.pool(self.dw(x)))
        return self.fc2(self.odd(torch.relu(self.fc1(x))))


class ChainNet(nn.Module):
    """Modules only (torch.fx traceable chain) with BN between producer and consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(4, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 64), nn.GELU(),
                                  nn.Linear(64, 16))

    def forward(self, x):
        return self.head(self.features(x))


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return _randomize_bn(TinyNet())


def test_eligibility_reasons_are_reported_per_layer(tiny):
    report = prune_(tiny, PruneConfig(min_params=0))
    by = {r.name: r for r in report.layers}
    assert "first conv on 3 image channel" in by["stem"].reason and not by["stem"].eligible
    assert "depthwise" in by["dw"].reason
    assert "not a multiple of 4" in by["fc2"].reason
    assert by["conv"].pruned and by["fc1"].pruned and by["odd"].pruned
    assert set(report.masks) == {"conv", "fc1", "odd"}
    for name, mask in report.masks.items():
        w = dict(tiny.named_modules())[name].weight
        assert mask.dtype == torch.bool and mask.shape == w.shape
        assert check_2to4(w, axis=1)
        assert 0.5 <= by[name].kept_magnitude_share <= 1.0
    assert not check_2to4(tiny.stem.weight.detach().reshape(16, -1)[:, :24], axis=1)


def test_tiny_layers_and_patterns_are_skipped(tiny):
    report = prune_(tiny, PruneConfig(min_params=512, exclude=("fc*",)))
    by = {r.name: r for r in report.layers}
    assert "tiny layer" in by["odd"].reason
    assert by["fc1"].reason == "excluded by prune.exclude"
    assert list(report.masks) == ["conv"]
    report2 = prune_(copy.deepcopy(TinyNet()), PruneConfig(include=("re:^fc",), min_params=0))
    assert list(report2.masks) == ["fc1"]


def test_no_eligible_layer_is_one_clear_error():
    with pytest.raises(InputError, match="no layer is eligible"):
        prune_(nn.Sequential(nn.Linear(3, 5)), PruneConfig())
    with pytest.raises(ConfigError, match="calibration inputs"):
        prune_(TinyNet(), PruneConfig(method="sparsegpt"))


def test_search_permutation_never_loses_and_finds_the_obvious_gain():
    # Columns 0,1 and 4,5 are large: identity order puts two big ones per group (nothing lost);
    # columns 0,1,2,3 large with 4..7 small: identity loses half the big mass, a swap fixes it.
    w = torch.tensor([[9.0, 9.0, 9.0, 9.0, 0.1, 0.1, 0.1, 0.1]]).repeat(3, 1)
    perm, before, after = search_permutation(w)
    assert after > before
    assert after == pytest.approx(3 * 4 * 9.0)
    assert sorted(perm) == list(range(8))


def test_permutation_keeps_the_network_function_before_pruning():
    torch.manual_seed(0)
    model = _randomize_bn(ChainNet())
    x = torch.randn(5, 4, 6, 6)
    ref = model(x)
    permuted = copy.deepcopy(model)
    names = ["features.3", "head.2", "head.4"]
    info = permute_for_sparsity_(permuted, names, PruneConfig())
    assert all(info[n]["permuted"] for n in names), info
    assert not torch.equal(permuted.features[3].weight, model.features[3].weight)
    torch.testing.assert_close(permuted(x), ref, rtol=1e-4, atol=1e-5)


def test_permutation_method_keeps_more_magnitude_than_magnitude():
    torch.manual_seed(0)
    model = _randomize_bn(ChainNet())
    mag = prune_(copy.deepcopy(model), PruneConfig(method="magnitude", min_params=0))
    per = prune_(copy.deepcopy(model), PruneConfig(method="permutation", min_params=0))
    kept = {r.name: r.kept_magnitude_share for r in mag.layers if r.pruned}
    for r in per.layers:
        if r.pruned:
            assert r.permuted
            assert r.kept_magnitude_share >= kept[r.name] - 1e-9


def test_permutation_on_untraceable_model_falls_back_with_a_note(tiny):
    report = prune_(tiny, PruneConfig(method="permutation", min_params=0))
    assert report.pruned_layers
    assert all(check_2to4(dict(tiny.named_modules())[r.name].weight) for r in report.pruned_layers)


def test_sparsegpt_has_lower_output_error_than_magnitude():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(32, 16))
    # correlated inputs: SparseGPT's weight update can compensate, magnitude cannot
    base = torch.randn(512, 8)
    x = torch.cat([base, base @ torch.randn(8, 24) + 0.05 * torch.randn(512, 24)], 1)
    ref = lin(x).detach()
    errs = {}
    for method in ("magnitude", "sparsegpt"):
        m = copy.deepcopy(lin)
        report = prune_(m, PruneConfig(method=method, min_params=0), calib_inputs=x)
        assert check_2to4(m[0].weight, axis=1)
        assert torch.equal(m[0].weight != 0, report.masks["0"] & (m[0].weight != 0))
        errs[method] = float(((m(x).detach() - ref) ** 2).mean())
    assert errs["sparsegpt"] < 0.5 * errs["magnitude"]


def test_sparsegpt_conv_groups_match_tensorrt_layout():
    torch.manual_seed(0)
    model = _randomize_bn(ChainNet())
    calib = [torch.randn(16, 4, 6, 6) for _ in range(2)]
    report = prune_(model, PruneConfig(method="sparsegpt", min_params=0, sparsegpt_sequential=False),
                    calib_inputs=iter(calib))
    assert not report.notes["sparsegpt"]["fallback"]
    for name in report.masks:
        w = dict(model.named_modules())[name].weight
        assert check_2to4(w, axis=1), name
        assert (report.masks[name].reshape(w.shape[0], -1, 4, *w.shape[2:]).sum(2) == 2).all()


def test_pruned_model_exports_to_onnx_with_pattern_intact(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = ChainNet().eval()
    prune_(model, PruneConfig(min_params=0))
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 4, 6, 6),), str(path), dynamo=False, opset_version=17,
                      do_constant_folding=True)
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    checked = 0
    for node in m.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in inits:
            w = inits[node.input[1]]
            if w.shape[1] % 4 == 0 and w.shape[1] >= 8:
                assert check_2to4(w, axis=1), node.name
                checked += 1
    assert checked == 3
    assert np.isfinite(inits[next(iter(inits))]).all()


class QKV(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.o = nn.Linear(16, 16)

    def forward(self, x):
        att = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), dim=-1)
        return self.o(att @ self.v(x))


def test_sparsegpt_groups_layers_reading_the_same_input():
    from trtopt.sparsity.sparsegpt import _input_groups

    x = torch.randn(4, 5, 16)
    assert _input_groups(QKV(), ["q", "k", "v", "o"], x) == [["q", "k", "v"], ["o"]]
    seq = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    assert _input_groups(seq, ["0", "2", "4"], torch.randn(8, 16)) == [["0"], ["2"], ["4"]]
    # grouped sequential pruning equals pruning each layer after the previous ones (exact, not approximate)
    torch.manual_seed(0)
    model, calib = QKV(), torch.randn(64, 5, 16)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    prune_(a, PruneConfig(method="sparsegpt", min_params=0), calib_inputs=calib)
    for name in ("q", "k", "v", "o"):  # one layer at a time, each with fresh calibration passes
        prune_(b, PruneConfig(method="sparsegpt", min_params=0, include=(name,)), calib_inputs=calib)
    for name in ("q", "k", "v", "o"):
        torch.testing.assert_close(getattr(a, name).weight, getattr(b, name).weight)


class AttentionNet(nn.Module):
    """ids, 0/1 mask [N, 8] -> logits [N, 4]: an nn.TransformerEncoder (two layers) and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 4)

    def forward(self, ids, mask):
        return self.head(self.enc(self.emb(ids), src_key_padding_mask=mask == 0)[:, 0])


def _attention_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 50, (n, 8)).astype(np.int64)
    mask = np.ones((n, 8), np.int64)
    mask[::2, 5:] = 0
    return {"ids": ids, "mask": mask}, (ids[:, 0] % 4).astype(np.int64)


@pytest.mark.parametrize("method", ["magnitude", "permutation", "sparsegpt"])
def test_attention_input_projections_are_pruned_and_counted(method):
    from trtopt.sparsity.summary import prune_summary, summary_lines

    torch.manual_seed(0)
    model = AttentionNet().eval()
    x, _ = _attention_data()
    calib = [(torch.from_numpy(x["ids"]), torch.from_numpy(x["mask"]))]
    report = prune_(model, PruneConfig(method=method, min_params=0), calib_inputs=calib)
    qkv = [f"enc.layers.{i}.self_attn.in_proj_weight" for i in (0, 1)]
    by = {r.name: r for r in report.layers}
    for name in qkv:
        assert by[name].pruned and by[name].kind == "MultiheadAttention" and by[name].shape == (96, 32)
        assert check_2to4(model.get_parameter(name), axis=1)
    assert set(report.masks) == {r.name for r in report.layers if r.pruned}
    if method == "sparsegpt":  # the feed-forward Linears got SparseGPT (the fused Transformer path skips their hooks)
        fallback = report.notes["sparsegpt"]["fallback"]
        assert {"enc.layers.1.linear1", "enc.layers.1.linear2"} <= set(report.notes["sparsegpt"]["rel_error"])
        assert fallback[qkv[0]] == "SparseGPT: attention projection, magnitude used"
        assert set(fallback) == {*qkv, "enc.layers.0.self_attn.out_proj", "enc.layers.1.self_attn.out_proj"}
    s = prune_summary(model, report, masks_ok=True, finetuned=False)
    assert s["pruned"] == len(report.masks) == 9  # in_proj, out_proj, linear1, linear2 per layer; the head
    assert summary_lines(s)[0].startswith(f"2:4 pruning ({method}): 9 of 9 layers pruned")


def test_attention_masks_survive_finetune_and_export_as_2to4_matmuls(tmp_path):
    from trtopt.export import export_with_specs
    from trtopt.inputs import parse_input_specs
    from trtopt.sparsity import FinetuneConfig, finetune_masked, inspect_sparsity

    torch.manual_seed(0)
    model = AttentionNet()
    report = prune_(model, PruneConfig(min_params=0))
    x, y = _attention_data()
    hist = finetune_masked(model, report, x, y, FinetuneConfig(epochs=2, lr=1e-2, batch_size=16))
    assert hist.masks_intact
    for name in ("enc.layers.0.self_attn.in_proj_weight", "enc.layers.1.self_attn.in_proj_weight"):
        w = model.get_parameter(name).detach()
        assert not bool(w[~report.masks[name]].any()) and check_2to4(w, axis=1)
    path = export_with_specs(model.eval(), parse_input_specs(["ids:int64:batchx8:0..50", "mask:int64:batchx8:0..2"]),
                             tmp_path / "p.onnx")
    layers = {ly.node: ly for ly in inspect_sparsity(path).layers}
    qkv = [n for n in layers if "self_attn/MatMul" in n]
    assert len(qkv) == 2 and all(layers[n].compliant for n in qkv), {n: layers[n].reason for n in qkv}
    assert all(ly.compliant for n, ly in layers.items() if not n.startswith("/head"))


def test_attention_masks_load_from_a_mask_file(tmp_path):
    from trtopt.sparsity import load_masks, save_masks
    from trtopt.sparsity.masks import apply_masks_, validate_masks

    torch.manual_seed(0)
    pruned = AttentionNet()
    report = prune_(pruned, PruneConfig(min_params=0, include=("*.self_attn",)))
    assert sorted(report.masks) == ["enc.layers.0.self_attn.in_proj_weight", "enc.layers.1.self_attn.in_proj_weight"]
    save_masks(report.masks, tmp_path / "m.pt")
    torch.manual_seed(0)
    fresh = AttentionNet()
    masks = load_masks(tmp_path / "m.pt")
    validate_masks(fresh, masks)
    apply_masks_(fresh, masks)
    torch.testing.assert_close(fresh.get_parameter("enc.layers.1.self_attn.in_proj_weight"),
                               pruned.get_parameter("enc.layers.1.self_attn.in_proj_weight"))


class SeqWithRecurrence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1))
        self.gru = nn.GRU(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 8)

    def forward(self, x):
        h = self.features(x).mean(-1).transpose(1, 2)  # [N, H, 32]
        return self.fc(self.gru(h)[0][:, -1])


def test_summary_names_every_layer_kept_dense_with_its_reason_quoted():
    from trtopt.sparsity.summary import prune_summary, summary_lines

    model = SeqWithRecurrence()
    report = prune_(model, PruneConfig(min_params=0))
    by = {r.name: r for r in report.layers}
    assert not by["gru"].pruned and "recurrent layer (GRU)" in by["gru"].reason
    text = "\n".join(summary_lines(prune_summary(model, report, masks_ok=True, finetuned=False)))
    assert text.startswith("2:4 pruning (magnitude): 2 of 4 layers pruned")
    assert "first conv on 1 image channel(s): too few input channels for 2:4: 'features.0'" in text
    assert "recurrent layer (GRU): TensorRT has no 2:4 kernels for it: 'gru'" in text
    assert "pruned: 'features.2', 'fc'" in text
