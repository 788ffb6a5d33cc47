"""Recognize each output's kind from its shape and the op that computes it (:mod:`trtopt.judge.kinds`).

The rules, and what each leaves unsure (then the output is ``generic``, not recognized, and the report
asks for ``--output-kind``): a Concat of a box branch and a Sigmoid score branch is a YOLO-style head
(layout from the shorter of the two trailing axes); ``[N, 1, H, W]`` after a Sigmoid a probability map;
``[N, C, H, W]`` after a Softmax over C segmentation logits; ``[N, T, C]`` after a (Log)Softmax over C
CTC logits (blank 0); ``[N, T, F]`` after a Sigmoid frame posteriors (pitch bins when F = 360, CREPE);
``[N, C]`` after a Softmax class scores; ``[N, D]`` pooled or L2-normalized an embedding.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from trtopt.judge.kinds import OutputKind, check_declared, check_declared_shape
from trtopt.onnx.graph import GraphIndex, get_attr, source_producer


def _unsure(why: str) -> OutputKind:
    return OutputKind("generic", reason=why, recognized=False)


def _tail(index: GraphIndex, graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    return source_producer(graph, name) if name in index.producers else None


def _concat_head(graph: onnx.GraphProto, node: onnx.NodeProto, shape: tuple[int, ...]) -> OutputKind | None:
    """A Concat of a box branch and a Sigmoid score branch: a YOLO-style detection head.

    The layout comes from the output's shape (the channel axis, 4+C, is the shorter one: a head has
    far more anchors than classes), since a Transpose may follow the Concat.
    """
    if len(node.input) < 2 or shape[1] == shape[2] or min(shape[1], shape[2]) < 5:
        return None
    tails = [source_producer(graph, i) for i in node.input]
    if not any(t is not None and t.op_type == "Sigmoid" for t in tails[1:]):
        return None
    layout = "cfirst" if shape[1] < shape[2] else "clast"
    return OutputKind("detection", layout=layout, reason=f"Concat of a box branch and a Sigmoid score branch, "
                      f"{min(shape[1:])} channels x {max(shape[1:])} anchors (xywh boxes assumed: declare "
                      "box=xyxy otherwise)")


def recognize_one(index: GraphIndex, graph: onnx.GraphProto, name: str, shape: tuple[int, ...]) -> OutputKind:
    """The kind of output ``name`` of shape ``shape`` (FP32's actual output), from the graph."""
    node = _tail(index, graph, name)
    op = node.op_type if node is not None else None
    rank = len(shape)
    if rank == 3 and op == "Concat":
        head = _concat_head(graph, node, shape)
        if head is not None:
            return head
    if rank == 4 and shape[1] == 1 and op == "Sigmoid":
        return OutputKind("prob_map", reason="[N, 1, H, W] after a Sigmoid")
    if rank == 4 and shape[1] > 1 and op == "Softmax" and get_attr(node, "axis", -1) % 4 == 1:
        return OutputKind("segmentation", reason="[N, C, H, W] after a Softmax over C")
    if rank == 3 and shape[2] > 2 and op in ("Softmax", "LogSoftmax") and get_attr(node, "axis", -1) % 3 == 2:
        return OutputKind("ctc", reason=f"{op} over the last axis of [N, T, C]: a per-position class "
                          "distribution, decoded greedily with blank 0 (declare tokens or blank=K otherwise)")
    if rank == 3 and op == "Sigmoid":
        if shape[2] == 360:
            return OutputKind("pitch", reason="[N, T, 360] after a Sigmoid: CREPE-style pitch bins, 20 cents apart")
        return OutputKind("frames", reason="[N, T, F] after a Sigmoid: independent per-frame activations")
    if rank == 2 and shape[1] > 1 and op == "Softmax":
        return OutputKind("classes", reason="[N, C] after a Softmax")
    if rank == 2 and op in ("LpNormalization", "ReduceMean", "GlobalAveragePool"):
        return OutputKind("embedding", reason=f"[N, D] computed by {op} (a pooled or normalized vector)")
    if rank == 2 and op == "Div" and node is not None and any(
            (p := index.producers.get(i)) is not None and p.op_type in ("ReduceL2", "LpNormalization", "Sqrt")
            for i in node.input[1:]):
        return OutputKind("embedding", reason="[N, D] divided by its L2 norm")
    return _unsure(f"shape {list(shape)} after {op or 'no op'} fits no kind for sure")


def recognize(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]],
              declared: Mapping[str, OutputKind] | None = None) -> dict[str, OutputKind]:
    """The kind of every output in ``shapes`` (name -> FP32 output shape): declared, else recognized.

    Raises:
        ConfigError: A declaration naming no output of the model, or a kind its shape cannot have.
    """
    declared = dict(declared or {})
    check_declared(declared, [o.name for o in model.graph.output])
    for n, k in declared.items():
        if n in shapes:
            check_declared_shape(n, k, tuple(shapes[n]))
    index = GraphIndex(model.graph)
    return {n: declared[n] if n in declared else recognize_one(index, model.graph, n, tuple(s))
            for n, s in shapes.items()}
