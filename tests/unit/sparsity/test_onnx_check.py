"""ONNX 2:4 checker: per-op axis, look-through of Q/DQ/Cast/Transpose, summary, GPU pre-flight, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.sparsity.preflight import inspect_sparsity, preflight  # noqa: E402


def sparse24(shape, axis, seed=0):
    """Random weight that is exactly 2:4 along ``axis``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32) + 0.1
    moved = np.moveaxis(w, axis, -1).copy()
    g = moved.reshape(-1, 4)
    g[:, 1] = 0.0
    g[:, 3] = 0.0
    return np.moveaxis(g.reshape(moved.shape), -1, axis).copy()


def dense(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) + 3.0


def make_model(nodes, inits, inputs, outputs, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def by_node(report):
    return {ly.node: ly for ly in report.layers}


def test_conv_axis_1_and_grouped_conv():
    model = make_model(
        [helper.make_node("Conv", ["x", "w_ok"], ["a"], name="conv_ok", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["a", "w_bad"], ["b"], name="conv_axis0", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["b", "w_dw"], ["y"], name="dw", group=8, pads=[1, 1, 1, 1])],
        {"w_ok": sparse24((8, 8, 3, 3), 1), "w_bad": sparse24((8, 8, 3, 3), 0), "w_dw": dense((8, 1, 3, 3))},
        [vi("x", ["N", 8, 6, 6])], [vi("y", ["N", 8, 6, 6])],
    )
    rep = by_node(inspect_sparsity(model, gpu="a100"))
    assert rep["conv_ok"].axis == 1 and rep["conv_ok"].eligible and rep["conv_ok"].compliant
    assert rep["conv_axis0"].eligible and not rep["conv_axis0"].compliant  # 2:4 along K is not what TRT needs
    assert not rep["dw"].eligible and "group" in rep["dw"].reason
    # conv FLOPs: 2 * (C*R*S) * (K*H*W) per sample
    assert rep["conv_ok"].flops == 2 * 8 * 9 * 8 * 36


@pytest.mark.parametrize("trans_b,shape,axis", [(1, (16, 8), 1), (0, (8, 16), 0)])
def test_gemm_axis_follows_transB(trans_b, shape, axis):
    good = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=trans_b)],
                      {"w": sparse24(shape, axis)}, [vi("x", ["N", 8])], [vi("y", ["N", 16])])
    wrong = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=trans_b)],
                       {"w": sparse24(shape, 1 - axis)}, [vi("x", ["N", 8])], [vi("y", ["N", 16])])
    g = by_node(inspect_sparsity(good, gpu="h100"))["fc"]
    assert (g.axis, g.reduction, g.out_channels, g.compliant) == (axis, 8, 16, True)
    assert not by_node(inspect_sparsity(wrong, gpu="h100"))["fc"].compliant


def test_matmul_constant_b_axis_0_and_transpose_look_through():
    w_t = sparse24((16, 8), 1)  # stored [N, K], 2:4 along K; Transpose makes B = [K, N]
    model = make_model(
        [helper.make_node("MatMul", ["x", "b"], ["h"], name="mm_direct"),
         helper.make_node("Transpose", ["wt"], ["bt"], perm=[1, 0]),
         helper.make_node("MatMul", ["h", "bt"], ["h2"], name="mm_transposed"),
         helper.make_node("Transpose", ["h2"], ["h2t"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["h2", "h2t"], ["y"], name="mm_activations")],
        {"b": sparse24((8, 8), 0), "wt": w_t},
        [vi("x", ["N", 5, 8])], [vi("y", ["N", 5, 5])],
    )
    report = inspect_sparsity(model, gpu="a100")
    rep = by_node(report)
    assert rep["mm_direct"].axis == 0 and rep["mm_direct"].compliant
    t = rep["mm_transposed"]
    assert t.path == ["Transpose"] and t.shape == [8, 16] and t.axis == 0 and t.compliant and t.weight == "wt"
    assert "mm_activations" not in rep
    assert report.summary["skipped_non_constant_weight"] == 1
    # a 2:4 pattern along the wrong stored axis is caught through the Transpose as well
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(sparse24((16, 8), 0), "wt"))
    assert not by_node(inspect_sparsity(model, gpu="a100"))["mm_transposed"].compliant


def test_qdq_and_cast_look_through():
    w = sparse24((16, 8), 1)
    scale = np.array(0.05, np.float32)
    zp = np.array(0, np.int8)
    q8 = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    model = make_model(
        [helper.make_node("QuantizeLinear", ["wf", "s", "z"], ["wq"]),
         helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
         helper.make_node("Gemm", ["x", "wd"], ["h"], name="fc_qdq", transB=1),
         helper.make_node("DequantizeLinear", ["w8", "s", "z"], ["w8d"]),
         helper.make_node("Gemm", ["h", "w8d"], ["h2"], name="fc_int8", transB=0),
         helper.make_node("Cast", ["w16"], ["w16c"], to=TensorProto.FLOAT),
         helper.make_node("Gemm", ["h2", "w16c"], ["y"], name="fc_cast", transB=1)],
        {"wf": w, "s": scale, "z": zp, "w8": np.ascontiguousarray(q8.T), "w16": dense((16, 8)).astype(np.float16)},
        [vi("x", ["N", 8])], [vi("y", ["N", 16])],
    )
    rep = by_node(inspect_sparsity(model, gpu="orin"))
    assert rep["fc_qdq"].compliant and rep["fc_qdq"].path == ["DequantizeLinear", "QuantizeLinear"]
    assert rep["fc_qdq"].weight == "wf"
    assert rep["fc_int8"].compliant and rep["fc_int8"].axis == 0
    assert rep["fc_cast"].eligible and not rep["fc_cast"].compliant and rep["fc_cast"].path == ["Cast"]


def _mixed_model(big=False):
    k = 256 if big else 16
    return make_model(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
         helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc2", transB=1)],
        {"w1": sparse24((k, k), 1), "w2": dense((k, k))},
        [vi("x", ["N", k])], [vi("y", ["N", k])],
    )


def test_summary_counts_and_flop_share():
    s = inspect_sparsity(_mixed_model(), gpu="a100").summary
    assert (s["layers"], s["eligible"], s["compliant"]) == (2, 2, 1)
    assert s["sparse_flop_share"] == pytest.approx(0.5)


def test_preflight_verdicts():
    small, big = inspect_sparsity(_mixed_model(), "t4"), inspect_sparsity(_mixed_model(big=True), "a100")
    assert small.preflight.verdict == "no_speedup" and small.preflight.sparse_tensor_cores is False
    assert "no speedup" in small.preflight.message
    assert big.preflight.verdict == "possible_speedup"
    assert any("not 2:4" in w for w in big.preflight.warnings)  # fc2 is large but dense
    a100_small = preflight(inspect_sparsity(_mixed_model(), "a100").layers, "a100")
    assert a100_small.verdict == "unlikely_speedup"
    assert any("below ~256 channels" in w for w in a100_small.warnings)
    orin = inspect_sparsity(_mixed_model(big=True), "orin").preflight
    assert orin.compute_capability == "8.7" and orin.sparse_tensor_cores


def test_auto_without_cuda_is_unknown():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    pf = inspect_sparsity(_mixed_model(big=True), "auto").preflight
    assert pf.verdict == "unknown" and pf.compute_capability is None


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        inspect_sparsity(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(InputError):
        inspect_sparsity(bad)
    with pytest.raises(ConfigError, match="unknown --gpu"):
        inspect_sparsity(_mixed_model(), gpu="v100")
    with pytest.raises(InputError, match="cannot inspect"):
        inspect_sparsity(42)


def test_torch_module_is_accepted():
    torch = pytest.importorskip("torch")
    from trtopt.sparsity import PruneConfig, prune_

    m = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    prune_(m, PruneConfig(exclude=("2",)))
    rep = inspect_sparsity(m, gpu="a100")
    assert [ly.compliant for ly in rep.layers] == [True, False]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trtopt", *args], capture_output=True, text=True, timeout=120)


def test_cli_json_contract(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_mixed_model(), str(path))
    res = _cli("inspect", "sparsity", str(path), "--json", "--gpu", "t4", "--out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr  # a report: exit 0 even though fc2 is not compliant
    data = json.loads(res.stdout)  # exactly one JSON object on stdout
    for ly in data["layers"]:
        assert {"node", "op", "weight", "shape", "axis", "eligible", "compliant", "reason"} <= set(ly)
    assert {"eligible", "compliant", "sparse_flop_share"} <= set(data["summary"])
    assert data["preflight"]["verdict"] == "no_speedup"
    assert json.loads((tmp_path / "r.json").read_text()) == data


def test_cli_bad_input_exit_2(tmp_path):
    res = _cli("inspect", "sparsity", str(tmp_path / "nope.onnx"), "--json")
    assert res.returncode == 2 and res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not found" in lines[0]
    assert _cli("inspect", "sparsity", "x.onnx", "--gpu", "v100").returncode == 2
