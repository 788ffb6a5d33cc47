"""Histogram collection through PyTorch: the ONNX interpreter, the torch histogram, the collector (CPU)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from _helpers.calib_graphs import ort_config, silu_data, silu_model  # noqa: E402
from trtopt.calib import CalibrationConfig, NumpySource, calibrate, calibration_targets, collect_histograms  # noqa: E402
from trtopt.calib.collect import _augmented  # noqa: E402
from trtopt.calib.histogram import AbsHistogram, ChannelAbsMax  # noqa: E402
from trtopt.calib.methods import compute_amax  # noqa: E402
from trtopt.calib.torch_exec import TorchGraphExecutor, strict_fp32  # noqa: E402
from trtopt.calib.torch_hist import TorchAbsHistogram, collect_histograms_torch, resolve_device  # noqa: E402
from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.onnx.graph import float_tensor_types  # noqa: E402

RNG = np.random.default_rng(0)


def _f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _ort_all(model, feeds):
    """Every typed intermediate of ``model`` from ONNX Runtime (no graph optimizations)."""
    types = float_tensor_types(model)
    names = [o for n in model.graph.node for o in n.output if o and n.op_type != "Constant" and o in types]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(_augmented(model, names, types), so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    return dict(zip(outs, sess.run(outs, feeds)))


def _assert_close(got, ref, name):
    got = got.numpy() if hasattr(got, "numpy") else got
    assert got.shape == ref.shape and got.dtype == ref.dtype, (name, got.shape, ref.shape, got.dtype, ref.dtype)
    if ref.dtype.kind == "f":
        scale = max(float(np.abs(ref[np.isfinite(ref)]).max(initial=0)), 1e-6)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-6 * scale, err_msg=name)
    else:
        np.testing.assert_array_equal(got, ref, err_msg=name)


def _check_every_tensor(model, feeds):
    ref = _ort_all(model, feeds)
    got = {k: v.cpu().clone() for k, v in TorchGraphExecutor(model, "cpu").run(feeds, set(ref))}
    assert set(got) == set(ref)
    for name, r in ref.items():
        _assert_close(got[name], r, name)
    return len(ref)


# -- (a) executor vs ONNX Runtime / ReferenceEvaluator ----------------------------------------------


def _conv_graph():
    """Conv (groups, dilation, strides, asymmetric pads, SAME_LOWER), pools, BN, ConvTranspose, Gemm."""
    ini = {"w1": _f32(8, 2, 3, 3, scale=0.4), "b1": _f32(8), "w2": _f32(8, 8, 3, 3, scale=0.2),
           "s": _f32(8) + 1.5, "bb": _f32(8), "mu": _f32(8), "var": np.abs(_f32(8)) + 0.5,
           "wt": _f32(8, 4, 3, 3, scale=0.3), "bt": _f32(4), "wt2": _f32(4, 4, 2, 2, scale=0.3),
           "lo": np.array(-0.5, np.float32), "hi": np.array(2.0, np.float32),
           "wg": _f32(20, 5), "bg": _f32(5), "wg2": _f32(5, 5), "c2": _f32(1, 5)}
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], group=2, pads=[1, 2, 2, 1], strides=[1, 2], dilations=[2, 1]),
        N("BatchNormalization", ["c1", "s", "bb", "mu", "var"], ["bn"], epsilon=1e-3),
        N("Clip", ["bn", "lo", "hi"], ["cl"]),
        N("Conv", ["cl", "w2"], ["c2a"], auto_pad="SAME_LOWER", strides=[2, 2]),
        N("Sigmoid", ["c2a"], ["sg"]),
        N("MaxPool", ["cl"], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], ceil_mode=1),
        N("AveragePool", ["cl"], ["ap"], kernel_shape=[2, 3], pads=[0, 1, 1, 0], strides=[2, 2]),
        N("AveragePool", ["cl"], ["ap2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        N("ConvTranspose", ["mp", "wt", "bt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
        N("ConvTranspose", ["ct", "wt2"], ["ct2"], strides=[2, 2], pads=[0, 1, 1, 0]),
        N("Tanh", ["ct2"], ["th"]),
        N("GlobalAveragePool", ["th"], ["g1"]),
        N("GlobalMaxPool", ["ap2"], ["g2"]),
        N("GlobalAveragePool", ["sg"], ["g3"]),
        N("Concat", ["g1", "g2", "g3"], ["cat"], axis=1),
        N("Flatten", ["cat"], ["fl"]),
        N("Gemm", ["fl", "wg", "bg"], ["gm"], alpha=0.5, beta=2.0),
        N("Relu", ["gm"], ["r"]),
        N("Gemm", ["r", "wg2", "c2"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 11, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [numpy_helper.from_array(v, k) for k, v in ini.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_graph_matches_onnxruntime_and_reference_evaluator_for_every_tensor():
    m = _conv_graph()
    feeds = {"x": _f32(3, 4, 11, 10)}
    assert _check_every_tensor(m, feeds) == 19
    got = dict(TorchGraphExecutor(m).run(feeds, {"y"}))
    _assert_close(got["y"], ReferenceEvaluator(m).run(None, feeds)[0], "y")


class _TinyEncoder(torch.nn.Module):
    """Embeddings + one attention block + masked mean pool + L2 norm (MiniLM's exported op mix)."""

    def __init__(self, vocab: int = 40, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.d = heads, d
        self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(32, d)
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ff1, self.ff2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, ids, mask):
        n, s = ids.shape
        pos = torch.arange(s, device=ids.device).unsqueeze(0).expand(n, s)
        h = self.ln1(self.emb(ids) + self.pos(pos))
        q, k, v = (t.reshape(n, s, self.heads, -1).transpose(1, 2) for t in self.qkv(h).split(self.d, dim=-1))
        bias = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(torch.float32).min
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d // self.heads) + bias, dim=-1)
        h = self.ln2(h + self.out((att @ v).transpose(1, 2).reshape(n, s, self.d)))
        y = h + self.ff2(torch.nn.functional.gelu(self.ff1(h)))
        m = mask[..., None].to(y.dtype)
        pooled = (y * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "enc.onnx"
    ids, mask = torch.randint(0, 40, (2, 7)), torch.ones(2, 7, dtype=torch.int64)
    axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "emb": {0: "b"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(_TinyEncoder().eval(), (ids, mask), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["emb"], dynamic_axes=axes)
    return onnx.load(str(path))


def test_exported_encoder_matches_onnxruntime_for_every_tensor(encoder):
    ops = {n.op_type for n in encoder.graph.node}
    assert {"Shape", "Gather", "Reshape", "LayerNormalization", "Softmax", "Erf", "MatMul", "Transpose"} <= ops
    ids = RNG.integers(0, 40, (3, 9)).astype(np.int64)
    mask = np.ones((3, 9), np.int64)
    mask[1, 5:] = 0
    assert _check_every_tensor(encoder, {"input_ids": ids, "attention_mask": mask}) > 60


def _one(op, inputs, attrs=None, n_out=1, opset=17, feed=("x",)):
    """A single-node model; inputs not named in ``feed`` become initializers ("" = omitted)."""
    names = [k for k, _ in inputs]
    ini = [numpy_helper.from_array(v, k) for k, v in inputs if k and k not in feed]
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs if k in feed]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"/{op}", **(attrs or {}))
    g = helper.make_graph([node], op, vis, [helper.make_empty_tensor_value_info(o) for o in outs], ini)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return m, {k: v for k, v in inputs if k in feed}


I64 = np.int64
OP_CASES = [
    ("Reshape", [("x", _f32(2, 3, 4)), ("s", np.array([0, -1], I64))], {}),
    ("Reshape", [("x", _f32(0, 4)), ("s", np.array([0, 4], I64))], {"allowzero": 1}),
    ("Div", [("x", np.array([-7, 7, -8, 9], I64)), ("d", np.array([2, -2, 3, 4], I64))], {}),
    ("Mod", [("x", np.array([-7, 7, -8], I64)), ("d", np.array([3, -3, 5], I64))], {}),
    ("Cast", [("x", np.array([-2.7, 2.7, 0.0, 1e3], np.float32))], {"to": TensorProto.INT32}),
    ("Cast", [("x", np.array([-2.0, 0.0, 0.5], np.float32))], {"to": TensorProto.BOOL}),
    ("Slice", [("x", _f32(5, 6)), ("a", np.array([4, 1], I64)), ("b", np.array([-100, 99], I64)),
               ("c", np.array([0, -1], I64)), ("d", np.array([-2, 2], I64))], {}),
    ("Gather", [("x", _f32(3, 5, 2)), ("i", np.array([[-1, 0], [2, -5]], I64))], {"axis": 1}),
    ("Gather", [("x", np.array([4, 7, 9], I64)), ("i", np.array(-1, I64))], {}),
    ("GatherElements", [("x", _f32(3, 4)), ("i", np.array([[0, -1], [2, 1], [3, 0]], I64))], {"axis": 1}),
    ("Unsqueeze", [("x", _f32(3, 4)), ("a", np.array([-1, 0], I64))], {}),
    ("Squeeze", [("x", _f32(1, 3, 1, 2))], {}),
    ("Expand", [("x", _f32(3, 1)), ("s", np.array([2, 1, 4], I64))], {}),
    ("ConstantOfShape", [("x", np.array([2, 3], I64))], {"value": numpy_helper.from_array(np.array([5], I64))}),
    ("Range", [("x", np.array(1, I64)), ("l", np.array(11, I64)), ("d", np.array(3, I64))], {}),
    ("Range", [("x", np.array(0.5, np.float32)), ("l", np.array(-2, np.float32)), ("d", np.array(-0.7, np.float32))],
     {}),
    ("ReduceMean", [("x", _f32(2, 3, 4))], {"axes": [-1, 0]}),
    ("ReduceSum", [("x", _f32(2, 3, 4)), ("a", np.array([1], I64))], {"keepdims": 0}),
    ("ReduceSum", [("x", _f32(2, 3)), ("a", np.array([], I64))], {"noop_with_empty_axes": 1}),
    ("ReduceL2", [("x", _f32(2, 3, 4))], {"axes": [-1]}),
    ("ReduceMax", [("x", _f32(2, 3, 4))], {"keepdims": 0}),
    ("Softmax", [("x", _f32(2, 3, 4))], {"axis": 1}),
    ("LayerNormalization", [("x", _f32(2, 3, 4)), ("s", _f32(3, 4)), ("b", _f32(4))], {"axis": -2}),
    ("Split", [("x", _f32(7, 2)), ("s", np.array([2, 5], I64))], {}),
    ("Where", [("x", np.array([True, False, True])), ("a", _f32(3)), ("b", _f32(2, 1))], {}),
    ("Equal", [("x", np.array([1, 2, 3], I64)), ("b", np.array([1, 0, 3], I64))], {}),
    ("Not", [("x", np.array([True, False]))], {}),
    ("Pad", [("x", _f32(2, 3)), ("p", np.array([1, 0, 0, 2], I64)), ("v", np.array(1.5, np.float32))], {}),
    ("Transpose", [("x", _f32(2, 3, 4))], {}),
    ("Flatten", [("x", _f32(2, 3, 4))], {"axis": -1}),
    ("Pow", [("x", np.abs(_f32(5)) + 0.1), ("e", np.array(1.7, np.float32))], {}),
    ("Clip", [("x", _f32(6)), ("lo", np.array(0.1, np.float32))], {}),
    ("Tile", [("x", _f32(2, 3)), ("r", np.array([2, 1], I64))], {}),
    ("CumSum", [("x", _f32(4, 3)), ("a", np.array(0, I64))], {"exclusive": 1, "reverse": 1}),
    ("Einsum", [("x", _f32(2, 3)), ("b", _f32(3, 4))], {"equation": "ij,jk->ik"}),
    ("ArgMax", [("x", np.array([[1, 3, 3], [2, 2, 0]], np.float32))], {"axis": 1, "select_last_index": 1}),
    ("PRelu", [("x", _f32(2, 3, 4)), ("s", _f32(3, 1))], {}),
    ("HardSwish", [("x", _f32(10, scale=4))], {}),
    ("HardSigmoid", [("x", _f32(10, scale=4))], {"alpha": 0.3}),
    ("LeakyRelu", [("x", _f32(10))], {"alpha": 0.2}),
    ("Erf", [("x", _f32(10))], {}),
]


@pytest.mark.parametrize("op,inputs,attrs", OP_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(OP_CASES)])
def test_single_op_semantics_match_onnxruntime(op, inputs, attrs):
    n_out = 2 if op == "Split" else 1
    model, feeds = _one(op, inputs, attrs, n_out=n_out)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    got = dict(TorchGraphExecutor(model).run(feeds, {f"y{i}" for i in range(n_out)}))
    for i, r in enumerate(ref):
        _assert_close(got[f"y{i}"], r, f"{op} y{i}")


def test_opset_dependent_attributes_match_onnxruntime():
    # (ReferenceEvaluator applies opset-13 Softmax semantics to opset 11, so ONNX Runtime is the oracle)
    cases = [("Softmax", [("x", _f32(2, 3, 4))], {"axis": 1}, 11),
             ("Unsqueeze", [("x", _f32(3, 4))], {"axes": [0, -1]}, 11),
             ("Gelu", [("x", _f32(8))], {"approximate": "tanh"}, 20),
             ("Clip", [("x", _f32(8))], {"min": -0.2, "max": 0.3}, 6)]
    for op, inputs, attrs, opset in cases:
        model, feeds = _one(op, inputs, attrs, opset=opset)
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        got = dict(TorchGraphExecutor(model).run(feeds, {"y0"}))["y0"]
        _assert_close(got, ref[0], f"{op}@{opset}")


def test_intermediates_are_freed_after_their_last_consumer():
    m = _conv_graph()
    ex = TorchGraphExecutor(m)
    assert ex._uses["c1"] == 1 and ex._uses["cl"] == 4 and "y" not in ex._uses
    live = []
    orig = ex._gather

    def spy(step, env):
        live.append(len(env))
        return orig(step, env)

    ex._gather = spy
    assert [k for k, _ in ex.run({"x": _f32(1, 4, 11, 10)}, {"x", "gm"})] == ["x", "gm"]
    assert max(live) <= 5  # never the whole graph's 19 tensors


# -- (b) TorchAbsHistogram == AbsHistogram bit for bit -----------------------------------------------


def _batches():
    r = np.random.default_rng(3)
    return [
        np.zeros(17, np.float32),  # zeros before any non-zero: pending
        np.maximum(r.standard_normal((4, 50)), 0).astype(np.float32),  # first non-zero batch fixes width
        (r.standard_normal(300) * 4).astype(np.float32),  # growth by appended bins
        np.zeros(5, np.float32),
        (r.standard_normal(200) * 3).astype(np.float64),  # float64 input
        (r.standard_normal(100) * 2).astype(np.float16),  # float16 input
        (r.standard_normal(64) * 1e5).astype(np.float32),  # range explosion: coarsening
        (r.standard_normal(64) * 10).astype(np.float32),
    ]


@pytest.mark.parametrize("skip_zeros", [False, True])
@pytest.mark.parametrize("bincount", [False, True])
def test_torch_histogram_is_bit_identical_to_numpy(skip_zeros, bincount):
    ref, h = AbsHistogram(32, skip_zeros), TorchAbsHistogram(32, skip_zeros, scratch=None if bincount else {})
    h._bincount = bincount  # True: the GPU accumulation path, exercised on the CPU
    for i, x in enumerate(_batches()):
        src = torch.from_numpy(x.copy())
        ref.update(x.copy())
        h.update(src)
        assert torch.equal(src, torch.from_numpy(x)), "update must not modify its input"
        got = h.to_numpy()
        assert isinstance(got, AbsHistogram)
        assert (got.counts is None) == (ref.counts is None), i
        if ref.counts is not None:
            assert got.counts.dtype == np.int64 and np.array_equal(got.counts, ref.counts), i
        assert np.array_equal(got.log_counts, ref.log_counts), i
        assert (got.width, got.amax, got.count, got.pending_zeros) == (ref.width, ref.amax, ref.count,
                                                                       ref.pending_zeros), i
    assert ref.width > 1e5 / (32 * 64) and len(ref.counts) <= 32 * 64  # coarsening happened


def test_torch_histogram_growth_and_all_zero_inputs():
    h = TorchAbsHistogram(16)
    h.update(torch.zeros(4))
    assert h.counts is None and h.pending_zeros == 4 and h.to_numpy().counts is None
    h.update(torch.tensor([0.0, 1.0, -2.0]))
    h.update(torch.tensor([3.0]))
    ref = AbsHistogram(16)
    for x in ([0.0] * 4, [0.0, 1.0, -2.0], [3.0]):
        ref.update(np.array(x, np.float32))
    assert np.array_equal(h.to_numpy().counts, ref.counts) and len(ref.counts) == 16 and ref.counts[0] == 5
    assert np.array_equal(h.to_numpy().log_counts, ref.log_counts) and ref.width == 0.25  # 3 < 0.25 * 16


# -- (c) the collector vs the ONNX Runtime collector on the digits CNN --------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from trtopt.export import export_onnx
    from trtopt.models.digits import load_digits_split, make_digits_cnn

    torch.manual_seed(0)
    split = load_digits_split(seed=0)
    path = export_onnx(make_digits_cnn(), torch.from_numpy(split.x_test[:1]), tmp_path_factory.mktemp("d") / "d.onnx")
    return onnx.load(str(path)), split.x_calib


def test_torch_collector_matches_onnxruntime_collector_on_digits(digits):
    model, x = digits
    cfg = CalibrationConfig(run_batch_size=5)
    types = float_tensor_types(model)
    targets = calibration_targets(model, scope="all", types=types)
    seen = []
    gemm_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Gemm"}
    ch_ort, ch_t = ChannelAbsMax(gemm_inputs), ChannelAbsMax(gemm_inputs)
    h_ort, hash_ort, n_ort = collect_histograms(model, NumpySource({"input": x}, batch_size=16), targets, cfg,
                                                types=types, channel=ch_ort)
    h_t, hash_t, n_t = collect_histograms_torch(model, NumpySource({"input": x}, batch_size=16), targets, cfg,
                                                progress=lambda d, t: seen.append((d, t)), total=len(x),
                                                types=types, channel=ch_t, device="cpu")
    assert set(ch_t.values) == gemm_inputs and len(gemm_inputs) == 2
    for name in gemm_inputs:
        np.testing.assert_allclose(ch_t.values[name], ch_ort.values[name], rtol=1e-5)
    assert (hash_t, n_t) == (hash_ort, n_ort) and n_t == len(x)
    assert list(h_t) == list(h_ort) == targets and len(targets) == 12
    assert seen[-1] == (len(x), len(x)) and len(seen) == math.ceil(len(x) / 16)
    for name in targets:
        a, b = h_ort[name], h_t[name]
        assert b.amax == pytest.approx(a.amax, rel=1e-5) and b.count == a.count
        ea = compute_amax("entropy", a.counts, a.edges, a.amax)
        eb = compute_amax("entropy", b.counts, b.edges, b.amax)
        assert eb == pytest.approx(ea, rel=0.01), name
    assert np.array_equal(h_t["input"].counts, h_ort["input"].counts)  # graph inputs: identical values


def test_torch_collector_honours_max_samples_static_batch_and_empty_source(digits):
    model, x = digits
    cfg = CalibrationConfig(max_samples=20)
    targets = calibration_targets(model)
    _, _, n = collect_histograms_torch(model, NumpySource({"input": x}, batch_size=8), targets, cfg)
    assert n == 24  # whole batches, stopped once 20 were seen (as the ONNX Runtime collector does)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    hists, _, n = collect_histograms_torch(fixed, [{"input": x[:8]}], targets, CalibrationConfig())
    assert n == 8 and set(hists) == set(targets)
    _, _, n = collect_histograms_torch(fixed, [{"input": x[:6]}], targets, CalibrationConfig())
    assert n == 6  # one call of 4, then the last 2 padded to a call of 4 (as the ONNX Runtime collector does)
    with pytest.raises(InputError, match="yielded no batches"):
        collect_histograms_torch(model, [], targets, CalibrationConfig())
    with pytest.raises(InputError, match="do not match"):
        collect_histograms_torch(model, [{"image": x[:4]}], targets, CalibrationConfig())


def test_fp32_math_is_forced_during_a_run_and_restored(digits):
    model, x = digits
    b = torch.backends
    before = (torch.get_float32_matmul_precision(), b.cudnn.allow_tf32)
    try:
        b.cuda.matmul.allow_tf32 = True
        b.cudnn.allow_tf32 = True
        inside = []
        for _ in TorchGraphExecutor(model).run({"input": x[:2]}, {"input"}):
            inside.append((b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, torch.get_float32_matmul_precision()))
        assert inside == [(False, False, "highest")]
        assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (
            True, True, "high")
        with pytest.raises(RuntimeError), strict_fp32():
            raise RuntimeError("boom")
        assert b.cuda.matmul.allow_tf32 and b.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        b.cudnn.allow_tf32 = before[1]


# -- (d) unsupported ops, (e) devices ---------------------------------------------------------------


def test_unsupported_ops_raise_one_line_input_error():
    model, _ = _one("Resize", [("x", _f32(1, 1, 2, 2)), ("", None), ("sc", np.array([1, 1, 2, 2], np.float32))],
                    {"mode": "nearest"})
    with pytest.raises(InputError) as exc:
        TorchGraphExecutor(model)
    assert str(exc.value) == ("op Resize (node /Resize) is not supported by the torch collector; "
                              "use collector='onnxruntime'")
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [],
                             [helper.make_empty_tensor_value_info("z")])
    cond = helper.make_node("If", ["c"], ["y"], name="/branch", then_branch=body, else_branch=body)
    g = helper.make_graph([cond], "if", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_empty_tensor_value_info("y")])
    with pytest.raises(InputError, match=r"^op If \(node /branch\) is not supported .*'onnxruntime'$"):
        TorchGraphExecutor(helper.make_model(g))
    custom = helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")
    g = helper.make_graph([custom], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_empty_tensor_value_info("y")])
    with pytest.raises(InputError, match=r"^op FusedGemm \(node y\)") as exc:
        collect_histograms_torch(helper.make_model(g), [{"x": _f32(1)}], ["x"], CalibrationConfig())
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_one_line_input_error(digits):
    model, x = digits
    for dev in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="CUDA is not available") as exc:
            resolve_device(dev)
        assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="CUDA is not available"):
        collect_histograms_torch(model, [{"input": x[:4]}], ["input"], CalibrationConfig(), device="cuda")
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_runtime_failures_are_one_line_errors_and_non_finite_values_are_left_out():
    model, feeds = _one("Reshape", [("x", _f32(2, 3)), ("s", np.array([4, -1], I64))])
    with pytest.raises(InputError, match=r"^torch collector: node /Reshape \(Reshape\) failed: .*onnxruntime"):
        list(TorchGraphExecutor(model).run(feeds, {"y0"}))
    # an activation holding -inf/NaN (an additive attention mask, sqrt of a negative): both collectors
    # drop those values, count them, and histogram the rest identically
    model, _ = _one("Sqrt", [("x", _f32(4))])
    x = np.array([4.0, -1.0, 16.0, -2.0], np.float32)
    got, _, _ = collect_histograms_torch(model, [{"x": x}], ["y0"], CalibrationConfig())
    ref, _, _ = collect_histograms(model, [{"x": x}], ["y0"], CalibrationConfig())
    for h in (got["y0"], ref["y0"]):
        assert h.nonfinite == 2 and h.count == 2 and h.amax == 4.0
    np.testing.assert_array_equal(got["y0"].counts, ref["y0"].counts)


def test_torch_collector_gives_the_same_auto_table():
    pytest.importorskip("torch")
    x = silu_data(128)
    x[3, 3] = 40.0
    m = silu_model()
    ort_t = calibrate(m, NumpySource({"x": x}, batch_size=16), ort_config("auto"))
    torch_t = calibrate(m, NumpySource({"x": x}, batch_size=50),
                        CalibrationConfig(collector="torch", device="cpu"))
    assert set(ort_t.amax) == set(torch_t.amax)
    for k in ort_t.amax:
        assert torch_t.amax[k] == pytest.approx(ort_t.amax[k], rel=2e-3), k
        assert torch_t.info[k]["method"] == ort_t.info[k]["method"], k
