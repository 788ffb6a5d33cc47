"""ONNX export of standard PyTorch modules (nn.TransformerEncoder, nn.MultiheadAttention), exporter errors,
and the exported graph's output check against PyTorch (Python API, CLI and recipe)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from _helpers.user_project import FAST_BENCH_TOML, make_package  # noqa: E402
from trtopt.backends.onnxrt import OnnxRuntimeRunner  # noqa: E402
from trtopt.cli.main import main  # noqa: E402
from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.export import export_with_specs  # noqa: E402
from trtopt.inputs import parse_input_specs  # noqa: E402

VOCAB, SEQ, D = 50, 8, 16
SPECS = parse_input_specs([f"ids:int64:batchx{SEQ}:0..{VOCAB}", f"mask:int64:batchx{SEQ}:0..2"])


class Encoder(nn.Module):
    """ids, 0/1 mask [N, T] -> per-token features [N, T, D], zero on padded tokens."""

    def __init__(self, batch_first=True, norm_first=False, activation="relu", padding_mask=True):
        super().__init__()
        self.batch_first, self.padding_mask = batch_first, padding_mask
        self.emb = nn.Embedding(VOCAB, D)
        layer = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.1, activation=activation, batch_first=batch_first,
                                           norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=not norm_first)

    def forward(self, ids, mask):
        h = self.emb(ids)
        h = h if self.batch_first else h.transpose(0, 1)
        h = self.enc(h, src_key_padding_mask=(mask == 0) if self.padding_mask else None)
        h = h if self.batch_first else h.transpose(0, 1)
        return h * mask.unsqueeze(-1)  # the fused path zeroes padded tokens; the graph computes them


class Attention(nn.Module):
    """One nn.MultiheadAttention (self-attention) between an embedding and the output."""

    def __init__(self, batch_first=True, padding_mask=True):
        super().__init__()
        self.batch_first, self.padding_mask = batch_first, padding_mask
        self.emb = nn.Embedding(VOCAB, D)
        self.att = nn.MultiheadAttention(D, 2, batch_first=batch_first)

    def forward(self, ids, mask):
        h = self.emb(ids)
        h = h if self.batch_first else h.transpose(0, 1)
        h, _ = self.att(h, h, h, key_padding_mask=(mask == 0) if self.padding_mask else None, need_weights=False)
        h = h if self.batch_first else h.transpose(0, 1)
        return h * mask.unsqueeze(-1)


def _padded_batch(n=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (n, SEQ)).astype(np.int64)
    mask = np.ones((n, SEQ), np.int64)
    mask[0, SEQ - 3:] = 0
    mask[1, 2:] = 0
    return ids, mask


def _assert_parity(model, path):
    """ONNX Runtime vs the model as the user runs it (eval, no grad, PyTorch's defaults: fast path on)."""
    assert torch.backends.mha.get_fastpath_enabled()
    onnx.checker.check_model(str(path), full_check=True)
    ids, mask = _padded_batch()
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids, "mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("padding_mask", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_exports_and_matches_pytorch(tmp_path, batch_first, padding_mask, norm_first, activation):
    torch.manual_seed(0)
    model = Encoder(batch_first, norm_first, activation, padding_mask).eval()
    path = export_with_specs(model, SPECS, tmp_path / "enc.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MatMul" in ops and "Softmax" in ops
    _assert_parity(model, path)


@pytest.mark.parametrize("padding_mask", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_exports_and_matches_pytorch(tmp_path, batch_first, padding_mask):
    torch.manual_seed(0)
    model = Attention(batch_first, padding_mask).eval()
    _assert_parity(model, export_with_specs(model, SPECS, tmp_path / "att.onnx"))


def test_fastpath_switch_is_restored_after_the_block_even_on_error():
    from trtopt.torch_util import transformer_fastpath_off

    torch.backends.mha.set_fastpath_enabled(True)
    with pytest.raises(ValueError), transformer_fastpath_off():
        assert not torch.backends.mha.get_fastpath_enabled()
        raise ValueError("boom")
    assert torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with transformer_fastpath_off():
            pass
        assert not torch.backends.mha.get_fastpath_enabled()  # the user's own setting stays
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def test_graph_that_fixes_a_dynamic_sequence_length_is_refused_naming_the_axis(tmp_path):
    specs = parse_input_specs([f"ids:int64:batchxseq=4..{SEQ}:0..{VOCAB}", f"mask:int64:batchxseq=4..{SEQ}:0..2"])
    torch.manual_seed(0)
    with pytest.raises(InputError) as exc:
        export_with_specs(Encoder().eval(), specs, tmp_path / "o" / "enc.onnx")
    msg = str(exc.value)
    assert "when seq is 4 (it was traced at 8)" in msg and "nn.MultiheadAttention" in msg
    assert f"ids:int64:batch=1..1..32x{SEQ}:0..{VOCAB}" in msg  # the fix, in the spec syntax
    assert not (tmp_path / "o").exists()


class _BatchBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * (2.0 if x.shape[0] == 1 else 3.0)  # the trace keeps the batch-1 branch


def test_graph_that_computes_something_else_at_another_batch_is_refused(tmp_path):
    with pytest.raises(InputError) as exc:
        export_with_specs(_BatchBranch().eval(), parse_input_specs(["x:float32:batchx4"]), tmp_path / "b.onnx")
    assert "when batch is 2" in str(exc.value) and "output 'output' differs from PyTorch" in str(exc.value)
    assert not list(tmp_path.iterdir())


USER_SRC = f"""
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding({VOCAB}, {D})
        layer = nn.TransformerEncoderLayer({D}, 2, 32, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear({D}, 3)

    def forward(self, ids, mask):
        h = self.enc(self.emb(ids), src_key_padding_mask=mask == 0)
        return self.head(h[:, 0])


def encoder():
    torch.manual_seed(0)
    return Encoder()


class Folds(nn.Module):
    def forward(self, x):
        return torch.nn.functional.fold(x, (4, 4), 2)


class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()
"""


@pytest.fixture
def userpkg(tmp_path, monkeypatch):
    return make_package(tmp_path, monkeypatch, {"models": USER_SRC})


def test_cli_exports_a_user_transformer_encoder_with_a_padding_mask(tmp_path, userpkg, capfd):
    out = tmp_path / "enc.onnx"
    rc = main(["export", "--model", f"{userpkg}.models:encoder", "--input", f"ids:int64:batchx{SEQ}:0..{VOCAB}",
               "--input", f"mask:int64:batchx{SEQ}:0..2", "--out", str(out)])
    std = capfd.readouterr()
    assert rc == 0, std.err
    assert std.out.strip() == str(out) and not std.err.strip()
    import importlib

    model = importlib.import_module(f"{userpkg}.models").encoder().eval()
    ids, mask = _padded_batch()
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"ids": ids, "mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factory, spec, expect", [
    ("Folds", "x:float32:batchx12x9", "operator 'aten::col2im' has no ONNX export at opset 17: export with opset 18"),
    ("Spectrum", "x:float32:batchx8", "operator 'aten::fft_rfft' has no ONNX export at opset 17: rewrite"),
])
def test_unsupported_operator_is_one_line_with_the_fix_no_dump_nothing_left(tmp_path, userpkg, capfd, factory, spec,
                                                                            expect):
    out = tmp_path / "o" / "m.onnx"
    assert main(["export", "--model", f"{userpkg}.models:{factory}", "--input", spec, "--out", str(out)]) == 2
    std = capfd.readouterr()
    assert std.out == ""  # no Torch IR graph dump
    err = [ln for ln in std.err.splitlines() if ln.strip()]
    assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "o").exists()


def test_recipe_runs_a_user_transformer_encoder(tmp_path, userpkg, capfd):
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        [recipe]
        name = "tenc"
        variants = ["fp32", "sparse24-fp32"]

        [workload]
        model = "{userpkg}.models:encoder"
        inputs = ["ids:int64:batchx{SEQ}:0..{VOCAB}", "mask:int64:batchx{SEQ}:0..2"]
        num_calib = 8
        num_eval = 8
    """) + FAST_BENCH_TOML + "\n")
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out)]) == 0, capfd.readouterr().err
    variants = {v["name"]: v for v in json.loads((out / "report.json").read_text())["variants"]}
    assert variants["fp32"]["status"] == "ok" and variants["sparse24-fp32"]["status"] == "ok", variants
    for name in ("dense-fp32.onnx", "sparse-fp32.onnx"):
        onnx.checker.check_model(str(out / "models" / name), full_check=True)


def test_export_keeps_module_names_and_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.export import ExportConfig, export_onnx
    from trtopt.models.digits import make_digits_cnn

    torch.manual_seed(0)
    model = make_digits_cnn(width=8).eval()
    x = torch.rand(3, 1, 8, 8)
    path = export_onnx(model, x, tmp_path / "d.onnx", ExportConfig())
    m = onnx.load(str(path))
    names = [n.name for n in m.graph.node]
    assert any("features.3" in n and n.endswith("Conv") for n in names)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with OnnxRuntimeRunner(path) as r:
        out = r.infer({"input": np.random.default_rng(1).random((7, 1, 8, 8), dtype=np.float32)})["logits"]
        assert out.shape == (7, 10)
        np.testing.assert_allclose(r.infer({"input": x.numpy()})["logits"], model(x).detach().numpy(), atol=1e-5)
    with pytest.raises(ConfigError):
        ExportConfig(opset=9)
