"""Subgraph walking: one walker reaches If/Loop bodies, their constants and their outer-scope reads."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtopt.onnx.constants import iter_constants
from trtopt.onnx.rewrite import drop_unused, drop_unused_initializers
from trtopt.onnx.walk import iter_graphs, iter_nodes, node_subgraphs, outer_scope_inputs, used_tensor_names

F32 = TensorProto.FLOAT


def _control_flow_model() -> onnx.ModelProto:
    """``If(cond)`` whose then branch holds a Constant node and reads ``w_outer`` from the top graph,
    and a ``Loop`` whose body holds an initializer::

        x ──► If ──► y_if           (then: Mul(x, c_then) + w_outer, else: Identity(x))
        x ──► Loop ─► y_loop        (body: Add(v, b_loop))
    """
    c_then = helper.make_node("Constant", [], ["c_then"], name="c_then",
                              value=numpy_helper.from_array(np.full(4, 2.0, np.float32)))
    then_g = helper.make_graph(
        [c_then, helper.make_node("Mul", ["x", "c_then"], ["t0"], name="mul"),
         helper.make_node("Add", ["t0", "w_outer"], ["then_out"], name="add_outer")],
        "then", [], [helper.make_tensor_value_info("then_out", F32, [4])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["else_out"], name="id")], "else", [],
                               [helper.make_tensor_value_info("else_out", F32, [4])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
         helper.make_node("Add", ["v_in", "b_loop"], ["v_out"], name="acc")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", F32, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F32, [4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "b_loop")])
    nodes = [helper.make_node("If", ["cond"], ["y_if"], name="branch", then_branch=then_g, else_branch=else_g),
             helper.make_node("Loop", ["trip", "cond", "x"], ["y_loop"], name="loop", body=body)]
    g = helper.make_graph(
        nodes, "top",
        [helper.make_tensor_value_info("x", F32, [4]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y_if", F32, [4]), helper.make_tensor_value_info("y_loop", F32, [4])],
        [numpy_helper.from_array(np.full(4, 3.0, np.float32), "w_outer"),
         numpy_helper.from_array(np.array(2, np.int64), "trip"),
         numpy_helper.from_array(np.zeros(4, np.float32), "unused")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_the_walker_finds_constants_in_if_and_loop_bodies():
    m = _control_flow_model()
    found = {(c.graph_path, c.name, c.kind) for c in iter_constants(m)}
    assert ("branch.then_branch", "c_then", "value") in found
    assert ("loop.body", "b_loop", "initializer") in found
    assert ("", "w_outer", "initializer") in found


def test_graph_paths_name_the_node_and_attribute_that_hold_each_subgraph():
    m = _control_flow_model()
    # in attribute order (onnx.helper sorts a node's attributes by name)
    assert [p for p, _ in iter_graphs(m.graph)] == ["", "branch.else_branch", "branch.then_branch", "loop.body"]
    assert [a for a, _ in node_subgraphs(m.graph.node[0])] == ["else_branch", "then_branch"]
    assert {n.name for _, n in iter_nodes(m.graph)} >= {"mul", "add_outer", "id", "acc", "keep"}


def test_a_tensor_read_only_inside_a_body_is_used():
    m = _control_flow_model()
    assert outer_scope_inputs(m.graph.node[0]) == ["x", "w_outer"]
    assert {"w_outer", "x", "trip", "cond"} <= used_tensor_names(m.graph)
    assert drop_unused_initializers(m.graph) == 1  # only "unused" goes; w_outer is read by the then branch
    assert sorted(t.name for t in m.graph.initializer) == ["trip", "w_outer"]


def test_drop_unused_removes_unread_constant_nodes_and_keeps_the_rest():
    m = _control_flow_model()
    m.graph.node.insert(0, helper.make_node("Constant", [], ["dead"], name="dead",
                                            value=numpy_helper.from_array(np.zeros(1, np.float32))))
    drop_unused(m.graph)
    assert [n.name for n in m.graph.node] == ["branch", "loop"]
    assert "unused" not in {t.name for t in m.graph.initializer}
    onnx.checker.check_model(m)
