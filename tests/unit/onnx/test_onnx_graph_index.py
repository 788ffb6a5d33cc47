"""GraphIndex: one scan gives the same producers, consumers, constants and arrays as a scan per lookup."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtopt.onnx.graph import (
    GraphIndex,
    consumers,
    initializer_array,
    opset_of,
    producers,
    source_producer,
)

F32 = TensorProto.FLOAT


def _graph() -> onnx.GraphProto:
    """x -> MatMul(w) -> Add(b: Constant) -> Reshape(shape) -> Relu -> y, plus a Constant with value_float."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Constant", [], ["b"], name="b", value=numpy_helper.from_array(np.ones(8, np.float32))),
        helper.make_node("Constant", [], ["alpha"], name="alpha", value_float=0.5),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
        helper.make_node("Reshape", ["hb", "shape"], ["r"], name="reshape"),
        helper.make_node("Relu", ["r"], ["y"], name="relu"),
        helper.make_node("Mul", ["r", "r"], ["sq"], name="square"),  # reads r twice
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")]
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [2, 4])],
                             [helper.make_tensor_value_info("y", F32, [2, 8]),
                              helper.make_tensor_value_info("sq", F32, [2, 8])], inits)


def test_index_agrees_with_a_brute_force_scan():
    g = _graph()
    index = GraphIndex(g)
    assert index.producers == producers(g)
    assert dict(index.consumers) == dict(consumers(g))
    assert [n.name for n in index.consumers["r"]] == ["relu", "square", "square"]
    assert index.constants == {"w", "shape", "b", "alpha"}
    names = {t for n in g.node for t in list(n.input) + list(n.output)} | {"nothing"}
    for name in names:
        want, got = initializer_array(g, name), index.array(name)
        assert (want is None) == (got is None), name
        if want is not None:
            np.testing.assert_array_equal(got, want)
    assert index.array("alpha") is None  # a value_float Constant is a constant, not a tensor proto
    assert index.elem_types == {"x": F32, "y": F32, "sq": F32, "w": F32, "shape": TensorProto.INT64, "b": F32}


def test_the_index_is_a_snapshot_of_the_graph_it_was_built_on():
    g = _graph()
    index = GraphIndex(g)
    g.initializer.append(numpy_helper.from_array(np.zeros(2, np.float32), "later"))
    assert index.array("later") is None and "later" not in index.constants
    assert GraphIndex(g).array("later") is not None


def test_an_initializer_wins_over_a_constant_node_of_the_same_name():
    g = _graph()
    zeros = numpy_helper.from_array(np.zeros((4, 8), np.float32))
    g.node.insert(0, helper.make_node("Constant", [], ["w"], value=zeros))
    assert GraphIndex(g).array("w").any()
    assert initializer_array(g, "w").any()


def test_opset_of_reads_the_default_domain_only():
    g = _graph()
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("", 17)])
    assert opset_of(m) == 17
    m2 = helper.make_model(g, opset_imports=[helper.make_opsetid("ai.onnx", 13)])
    assert opset_of(m2) == 13
    m3 = helper.make_model(g, opset_imports=[helper.make_opsetid("com.microsoft", 1)])
    assert opset_of(m3) == 0


def test_source_producer_looks_through_value_preserving_ops():
    g = _graph()
    assert source_producer(g, "r").name == "add"
    assert source_producer(g, "x") is None
