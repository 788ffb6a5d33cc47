"""Small ONNX graphs for the TensorRT-for-RTX build tests, each re-creating one situation (built in memory)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def _t(a, name):
    return numpy_helper.from_array(np.asarray(a), name)


def _qdq(x, scale, zp, out, axis=None):
    kw = {} if axis is None else {"axis": axis}
    return [helper.make_node("QuantizeLinear", [x, scale, zp], [out + "_q"], name=f"{out}_Q", **kw),
            helper.make_node("DequantizeLinear", [out + "_q", scale, zp], [out], name=f"{out}_DQ", **kw)]


def _model(nodes, inits, inputs, outputs, opset=17, domains=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                               *(helper.make_opsetid(d, 1) for d in domains)])


F = TensorProto.FLOAT


def qdq_conv(weight_axis=0, n_scales=16, act_scale=0.02, weight_scale=0.01, zp_dtype=np.int8, zp=0,
             batch="N"):
    """x[N,16,8,8] -> Q/DQ -> Conv(16, 3x3, Q/DQ weights per channel along ``weight_axis``) -> Relu -> y."""
    w = RNG.normal(0, 0.3, (16, 16, 3, 3)).astype(np.float32)
    ws = np.full(n_scales, weight_scale, np.float32)
    inits = [_t(w, "w"), _t(np.float32(act_scale), "s"), _t(zp_dtype(zp), "z"), _t(ws, "ws"),
             _t(np.zeros(n_scales, zp_dtype), "wz")]
    nodes = [*_qdq("x", "s", "z", "xd"), *_qdq("w", "ws", "wz", "wd", axis=weight_axis),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1], name="/features/0/Conv"),
             helper.make_node("Relu", ["c"], ["y"], name="/features/1/Relu")]
    return _model(nodes, inits, [("x", F, [batch, 16, 8, 8])], [("y", F, [batch, 16, 8, 8])])


def qdq_gemm_matmul():
    """x[N,64] -> Q/DQ -> Gemm(32) -> Q/DQ -> MatMul(16) -> y: two quantized compute nodes."""
    inits = [_t(RNG.normal(size=(32, 64)).astype(np.float32), "w1"), _t(np.zeros(32, np.float32), "b1"),
             _t(RNG.normal(size=(32, 16)).astype(np.float32), "w2"), _t(np.float32(0.02), "s"),
             _t(np.int8(0), "z"), _t(np.full(32, 0.01, np.float32), "ws1"), _t(np.zeros(32, np.int8), "wz1"),
             _t(np.full(16, 0.01, np.float32), "ws2"), _t(np.zeros(16, np.int8), "wz2")]
    nodes = [*_qdq("x", "s", "z", "xd"), *_qdq("w1", "ws1", "wz1", "w1d", axis=0),
             helper.make_node("Gemm", ["xd", "w1d", "b1"], ["h"], transB=1, name="/fc1/Gemm"),
             *_qdq("h", "s", "z", "hd"), *_qdq("w2", "ws2", "wz2", "w2d", axis=1),
             helper.make_node("MatMul", ["hd", "w2d"], ["y"], name="/fc2/MatMul")]
    return _model(nodes, inits, [("x", F, ["N", 64])], [("y", F, ["N", 16])])


def qdq_deconv():
    """x[N,32,8,8] -> Q/DQ -> ConvTranspose(16, 2x2, stride 2; Q/DQ weights per channel on axis 1) -> y."""
    w = RNG.normal(0, 0.1, (32, 16, 2, 2)).astype(np.float32)
    inits = [_t(w, "w"), _t(np.float32(0.02), "s"), _t(np.int8(0), "z"), _t(np.full(16, 0.003, np.float32), "ws"),
             _t(np.zeros(16, np.int8), "wz")]
    nodes = [*_qdq("x", "s", "z", "xd"), *_qdq("w", "ws", "wz", "wd", axis=1),
             helper.make_node("ConvTranspose", ["xd", "wd"], ["y"], strides=[2, 2], name="/up/ConvTranspose")]
    return _model(nodes, inits, [("x", F, ["N", 32, 8, 8])], [("y", F, ["N", 16, 16, 16])])


def fp16_conv():
    """FP16 graph: x(float) -> Cast fp16 -> Conv -> Relu -> Cast float -> y."""
    w = RNG.normal(0, 0.3, (16, 16, 3, 3)).astype(np.float16)
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16, name="cast_in"),
             helper.make_node("Conv", ["xh", "w"], ["c"], pads=[1, 1, 1, 1], name="/features/0/Conv"),
             helper.make_node("Relu", ["c"], ["r"], name="/features/1/Relu"),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="cast_out")]
    return _model(nodes, [_t(w, "w")], [("x", F, ["N", 16, 8, 8])], [("y", F, ["N", 16, 8, 8])])


def int32_bias_dq():
    """A Conv whose bias is an INT32 tensor behind a DequantizeLinear (TensorRT rejects INT32 DQ input)."""
    m = qdq_conv()
    g = m.graph
    g.initializer.extend([_t(np.zeros(16, np.int32), "bq"), _t(np.float32(0.0002), "bs")])
    g.node.insert(0, helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], name="bias_DQ"))
    conv = next(n for n in g.node if n.op_type == "Conv")
    conv.input.append("bd")
    return m


def mixed_add():
    """FP16 and FP32 inputs to one Add (strongly typed networks need matching types)."""
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16, name="cast_in"),
             helper.make_node("Add", ["xh", "x"], ["y"], name="/mix/Add")]
    return _model(nodes, [], [("x", F, [1, 8])], [("y", TensorProto.FLOAT16, [1, 8])])


def custom_op():
    """A custom-domain op (no plugin exists)."""
    nodes = [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="/head/Fancy")]
    return _model(nodes, [], [("x", F, [1, 8])], [("y", F, [1, 8])], domains=("com.example",))


def unsupported_op():
    """Det, which the TensorRT ONNX parser does not support."""
    nodes = [helper.make_node("Det", ["x"], ["y"], name="/solve/Det")]
    return _model(nodes, [], [("x", F, [2, 3, 3])], [("y", F, [2])])


def dynamic_spatial():
    """A Relu on x[N,3,H,W]: dynamic beyond the batch axis."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="/act/Relu")]
    return _model(nodes, [], [("x", F, ["N", 3, "H", "W"])], [("y", F, ["N", 3, "H", "W"])])


def tiny_conv_net(path, qdq=False, bad_op=False):
    """input[N,1,8,8] -> Conv(16, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(10) -> logits."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.3, (10, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes, x = [], "input"
    if qdq:
        inits += [numpy_helper.from_array(np.array(1 / 127, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z"),
                  numpy_helper.from_array(np.full(16, 0.9 / 127, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(16, np.int8), "wz")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"]),
                  helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], axis=0)]
        x, wname = "xdq", "wdq"
    else:
        wname = "w"
    nodes += [helper.make_node("Conv", [x, wname], ["c"], pads=[1, 1, 1, 1], name="/features/0/Conv"),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1, name="/classifier/Gemm")]
    if bad_op:
        nodes.append(helper.make_node("FancyOp", ["logits"], ["y"], domain="com.example", name="/head/Fancy"))
    out = "y" if bad_op else "logits"
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if bad_op else [])
    path.write_bytes(helper.make_model(g, opset_imports=opsets).SerializeToString())
    return path


def detector_head(path, score_max, rng):
    """A detector head: [1, 8] features -> [1, 15, 5] (pixel boxes, sigmoid score clipped at score_max).

    Clipping the scores is what a too-small calibrated range does to them."""
    w_box = rng.uniform(0, 80, size=(8, 60)).astype(np.float32)
    w_sc = rng.normal(size=(8, 15)).astype(np.float32)
    inits = [numpy_helper.from_array(w_box, "wb"), numpy_helper.from_array(w_sc, "ws"),
             numpy_helper.from_array(np.array([1, 15, 4], np.int64), "sb"),
             numpy_helper.from_array(np.array([1, 15, 1], np.int64), "ss"),
             numpy_helper.from_array(np.array(score_max, np.float32), "k")]
    nodes = [helper.make_node("MatMul", ["x", "wb"], ["b"]), helper.make_node("Reshape", ["b", "sb"], ["b3"]),
             helper.make_node("MatMul", ["x", "ws"], ["s"]), helper.make_node("Sigmoid", ["s"], ["sg"]),
             helper.make_node("Min", ["sg", "k"], ["sk"]), helper.make_node("Reshape", ["sk", "ss"], ["s3"]),
             helper.make_node("Concat", ["b3", "s3"], ["det"], axis=2)]
    g = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("det", TensorProto.FLOAT, [1, 15, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path.write_bytes(m.SerializeToString())
    return str(path)


def fragile_mlp(path, heavy: float = 300.0, samples: int = 64):
    """x[N,16] -> Gemm(first) -> Relu -> Gemm(mid) -> Relu -> Gemm(head) -> logits[N,10], saved to ``path``.

    Input channel 0 is scaled by ``heavy``: per-tensor INT8 of the *input* then leaves the other
    15 channels a handful of levels, so only the first layer is fragile. Returns ``(path, x[samples, 16])``.
    """
    rng = np.random.default_rng(0)
    ws = {"w1": rng.standard_normal((32, 16)) * 0.3, "w2": rng.standard_normal((32, 32)) * 0.2,
          "w3": rng.standard_normal((10, 32)) * 0.3}
    ws["w1"][:, 0] /= heavy  # channel 0 carries no more signal than the others, only a larger scale
    n = helper.make_node
    nodes = [n("Gemm", ["x", "w1"], ["h1"], name="/first/Gemm", transB=1), n("Relu", ["h1"], ["r1"]),
             n("Gemm", ["r1", "w2"], ["h2"], name="/mid/Gemm", transB=1), n("Relu", ["h2"], ["r2"]),
             n("Gemm", ["r2", "w3"], ["logits"], name="/head/Gemm", transB=1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(w.astype(np.float32), k) for k, w in ws.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.standard_normal((samples, 16)).astype(np.float32)
    x[:, 0] *= heavy
    return path, x


def linear_model(path, w: np.ndarray) -> str:
    """``y = x @ w`` saved to ``path``: x [N, 8] float32 -> y [N, 4] (``w`` [8, 4]); returns the path."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)
