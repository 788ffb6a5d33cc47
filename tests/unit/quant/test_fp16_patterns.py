"""FP16 patterns kept in FP32 without data: normalization chains, checked in true float16 arithmetic
(ONNX's ReferenceEvaluator computes float16 in float16, as a GPU does; ONNX Runtime's CPU does not), and
the Transposes ONNX Runtime's CPU session cannot open in FP16."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from _helpers.ort_crash_graphs import opens_in_child, seq_first_projection
from trtopt.onnx.io import save_onnx
from trtopt.quant import FP16Config, convert_fp16, norm_chain_nodes
from trtopt.quant.fp16_masks import top_constants
from trtopt.quant.fp16_patterns import ort_transpose_hazards

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
D = 64


def _norm_model(kind: str) -> onnx.ModelProto:
    """x[N, 64] -> MatMul (|h| up to ~1e3, fine in FP16) -> normalization of h -> * gamma -> MatMul -> y.

    ``rms``: Pow(h, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Div(h, .) (RMSNorm as PyTorch exports it);
    ``l2``: Mul(h, h) -> ReduceSum -> Add(eps) -> Sqrt -> Reciprocal -> Mul(h, .).
    """
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = [numpy_helper.from_array((rng.standard_normal((D, D)) * 40).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((D, 8)) * 0.2).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.linspace(0.5, 1.5, D).astype(np.float32), "gamma")]
    if kind == "rms":
        norm = [n("Pow", ["h", "two"], ["sq"], name="sq"),
                n("ReduceMean", ["sq"], ["ms"], name="mean", axes=[-1], keepdims=1),
                n("Add", ["ms", "eps"], ["mse"], name="add_eps"),
                n("Sqrt", ["mse"], ["rms"], name="sqrt"),
                n("Div", ["h", "rms"], ["nrm"], name="normalize")]
    else:
        norm = [n("Mul", ["h", "h"], ["sq"], name="sq"),
                n("ReduceSum", ["sq", "axes"], ["ss"], name="sum", keepdims=1),
                n("Add", ["ss", "eps"], ["sse"], name="add_eps"),
                n("Sqrt", ["sse"], ["l2"], name="sqrt"),
                n("Reciprocal", ["l2"], ["inv"], name="inv"),
                n("Mul", ["h", "inv"], ["nrm"], name="normalize")]
    nodes = [n("MatMul", ["x", "w1"], ["h"], name="fc1"), *norm, n("Mul", ["nrm", "gamma"], ["g"], name="gamma"),
             n("MatMul", ["g", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", F32, ["N", D])],
                          [helper.make_tensor_value_info("y", F32, ["N", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("kind", ["rms", "l2"])
def test_normalization_chain_stays_fp32_and_is_right_in_true_fp16_arithmetic(kind):
    m = _norm_model(kind)
    x = np.random.default_rng(1).standard_normal((16, D)).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    h = x @ numpy_helper.to_array(m.graph.initializer[0])
    assert np.abs(h).max() < 65504 < float((h.astype(np.float64) ** 2).max())  # h fits FP16, its square does not
    chain = {nd.name for nd in m.graph.node} - {"fc1", "gamma", "fc2"}
    assert set(norm_chain_nodes(m.graph, top_constants(m))) == chain
    res = convert_fp16(m)  # no calibration data: the static rule alone
    f = res.model
    reasons = res.fp32_reasons
    assert chain <= set(reasons)  # from the square to the normalized result (Pow, ReduceSum: their op type)
    assert all("chain of 'h' (square" in reasons[c] for c in chain if not reasons[c].startswith("op type"))
    assert "normalization chain of 'h' (square" in reasons["normalize"]
    assert not {"fc1", "gamma", "fc2"} & set(reasons)  # the MatMuls and the affine gamma still run in FP16
    out = ReferenceEvaluator(f).run(None, {"x": x})[0]
    assert np.isfinite(out).all()
    assert _cosine(out, ref) > 0.999


def test_seq_first_transpose_into_matmul_stays_fp32_and_the_model_opens_fully_optimized(tmp_path):
    m = seq_first_projection(fp16=False)
    res = convert_fp16(m)
    f = res.model
    reasons = res.fp32_reasons
    assert set(reasons) == {"seq_first"} and "ONNX Runtime" in reasons["seq_first"]
    path = save_onnx(f, tmp_path / "proj16.onnx")
    assert opens_in_child(path) == 0
    # a Transpose of the last two axes (K^T in attention) fuses safely, and so does one whose other operand has its rank
    assert ort_transpose_hazards(m.graph, top_constants(m)) == {"seq_first"}
    m.graph.node[0].attribute[0].ints[:] = [0, 2, 1]
    assert ort_transpose_hazards(m.graph, top_constants(m)) == set()
    m.graph.node[0].attribute[0].ints[:] = [1, 0, 2]
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((1, 32, 16), np.float32), "w"))
    assert ort_transpose_hazards(m.graph, top_constants(m)) == set()


@contextmanager
def _mha_fastpath_off():
    """PyTorch's fused MHA fast path does not export; turn it off for the export only (restored after)."""
    import torch

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _transformer_onnx(path) -> None:
    """A user's small nn.TransformerEncoder classifier, exported with PyTorch's TorchScript exporter."""
    import warnings

    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(32, 10)

        def forward(self, ids):
            return self.head(self.enc(self.emb(ids)).mean(1))

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 16))
    with _mha_fastpath_off(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder().eval(), (ids,), str(path), input_names=["ids"], output_names=["logits"],
                          dynamic_axes={"ids": {0: "batch"}}, dynamo=False, opset_version=17)


def test_fp16_transformer_encoder_opens_in_onnx_runtime_with_full_optimization(tmp_path):
    import onnxruntime as ort

    _transformer_onnx(tmp_path / "enc.onnx")
    res = convert_fp16(onnx.load(str(tmp_path / "enc.onnx")))
    f = res.model
    path = save_onnx(f, tmp_path / "enc16.onnx")  # checked the way bench and run open it
    assert opens_in_child(path) == 0  # ONNX Runtime's default session, as `trtopt bench` opens it
    assert sum("ONNX Runtime" in why for why in res.fp32_reasons.values()) == 2  # one Transpose per layer
    matmuls = [nd.name for nd in f.graph.node if nd.op_type == "MatMul"]
    assert len(matmuls) == 10 and not set(matmuls) & set(res.fp32_reasons)  # every MatMul computes in FP16
    ids = {"ids": np.random.default_rng(0).integers(0, 100, (4, 16)).astype(np.int64)}
    ref = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    assert _cosine(out, ref) > 0.999


def test_without_the_rule_the_chain_overflows_in_true_fp16():
    """The oracle sees what ONNX Runtime's CPU hides: with the rule off, the square re-enters FP16 and becomes inf."""
    m = _norm_model("rms")
    x = np.random.default_rng(1).standard_normal((16, D)).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    off = convert_fp16(m, FP16Config(block_layernorm_pattern=False)).model
    out = ReferenceEvaluator(off).run(None, {"x": x})[0]
    assert not np.allclose(out, ref, rtol=0.1, atol=0.1 * float(np.abs(ref).max()))  # garbage: zeros here
