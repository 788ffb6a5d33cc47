"""In-place graph rewrites every stage shares: keep some nodes, drop what nothing reads, raise the opset.

Uses inside If/Loop/Scan bodies (outer-scope reads) always count: a tensor read only by a subgraph
is in use.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from trtopt.errors import InputError
from trtopt.onnx.io import first_error_line
from trtopt.onnx.walk import used_tensor_names


def rebuild_nodes(graph: onnx.GraphProto, keep: Callable[[onnx.NodeProto], bool]) -> None:
    """Keep only the nodes of ``graph`` for which ``keep(node)`` is true, in order, in place.

    The kept nodes are copied before the node list is cleared, which is safe with every protobuf
    backend (the upb backend invalidates references into a cleared repeated field).
    """
    new = []
    for n in graph.node:
        if keep(n):
            c = onnx.NodeProto()
            c.CopyFrom(n)
            new.append(c)
    del graph.node[:]
    graph.node.extend(new)

def drop_unused_initializers(graph: onnx.GraphProto, candidates: set[str] | None = None) -> int:
    """Remove initializers of ``graph`` that nothing reads (subgraph uses count). Returns how many went.

    Args:
        graph: Top-level (or any) graph, modified in place.
        candidates: Only these names may be removed (all when ``None``).
    """
    used = used_tensor_names(graph)
    keep = [t for t in graph.initializer if t.name in used or (candidates is not None and t.name not in candidates)]
    dropped = len(graph.initializer) - len(keep)
    if dropped:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return dropped

def drop_unused(graph: onnx.GraphProto) -> None:
    """Remove the initializers and ``Constant`` nodes of ``graph`` that nothing reads, in place.

    ``Constant`` nodes read nothing, so one pass over each kind finds everything unused.
    """
    drop_unused_initializers(graph)
    used = used_tensor_names(graph)
    if any(n.op_type == "Constant" and n.output[0] not in used for n in graph.node):
        rebuild_nodes(graph, lambda n: not (n.op_type == "Constant" and n.output[0] not in used))

def upgrade_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Return ``model`` converted to default-domain opset ``target`` with ``onnx.version_converter``.

    ``model`` is not modified.

    Raises:
        InputError: The converter fails; the message is its first error line, for the caller to put
            in context.
    """
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, target)
    except Exception as exc:
        raise InputError(first_error_line(exc)) from exc
