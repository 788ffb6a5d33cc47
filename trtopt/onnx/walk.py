"""Walking a graph and its subgraphs (If ``then_branch``/``else_branch``, Loop and Scan ``body``).

Subgraphs are GraphProtos held in node attributes. They may read any tensor of an enclosing graph by
name (outer-scope references) without listing it as a node input, so "which tensors are used" must
look inside them, and constants live in them too. Every walk over subgraphs goes through
:func:`node_subgraphs`.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from trtopt.onnx.ops import WEIGHTED_OPS


def _graph_attrs(node: onnx.NodeProto) -> Iterator[tuple[str, list[onnx.GraphProto], bool]]:
    """``(attribute name, graphs, is a GRAPHS list)`` for every subgraph attribute of ``node``."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.name, [a.g], False
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield a.name, list(a.graphs), True

def node_subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """``(attribute name, graph)`` of every subgraph attribute of ``node`` (If branches, Loop/Scan bodies).

    A GRAPHS attribute (a list of graphs) gives one entry per graph, named ``attr[k]``.
    """
    out = []
    for name, graphs, is_list in _graph_attrs(node):
        out.extend(((f"{name}[{k}]" if is_list else name), g) for k, g in enumerate(graphs))
    return out

def iter_graphs(graph: onnx.GraphProto, path: str = "") -> Iterator[tuple[str, onnx.GraphProto]]:
    """Yield ``(path, graph)`` for ``graph`` and, recursively, every subgraph attribute in it.

    The top-level graph has path ``""``; a subgraph's path names the node and attribute that hold
    it, joined by ``/``: ``"If_0.then_branch"``, ``"loop.body/inner_if.else_branch"``. Covers every
    GRAPH / GRAPHS attribute (If ``then_branch``/``else_branch``, Loop and Scan ``body``, and any
    custom op with graph attributes), depth first in node order. A GRAPHS attribute holding more than
    one graph names each ``attr[k]``.

    Args:
        graph: Graph to walk.
        path: Prefix for the yielded paths (used by the recursion).

    Yields:
        ``(path, GraphProto)`` pairs, the given graph first.
    """
    yield path, graph
    for node in graph.node:
        label = node.name or (node.output[0] if node.output else node.op_type)
        for attr, subs, _ in _graph_attrs(node):
            for k, sub in enumerate(subs):
                name = f"{label}.{attr}" if len(subs) == 1 else f"{label}.{attr}[{k}]"
                yield from iter_graphs(sub, f"{path}/{name}" if path else name)

def iter_nodes(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.NodeProto]]:
    """Yield ``(path, node)`` for every node of ``graph`` and of all its subgraphs (see :func:`iter_graphs`)."""
    for path, g in iter_graphs(graph):
        for node in g.node:
            yield path, node

def outer_scope_inputs(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs read from enclosing graphs (implicit inputs), in first-use order.

    A name is outer-scope when no enclosing level inside the node defines it (subgraph inputs,
    initializers, node outputs). Empty for nodes without subgraphs.
    """
    found: dict[str, None] = {}

    def walk(g: onnx.GraphProto, defined: set[str]) -> None:
        local = defined | {i.name for i in g.input} | {t.name for t in g.initializer}
        local |= {t.values.name for t in g.sparse_initializer}
        for n in g.node:
            for i in n.input:
                if i and i not in local:
                    found[i] = None
            for _, sub in node_subgraphs(n):
                walk(sub, local)
            local |= set(n.output)
        for o in g.output:
            if o.name not in local:
                found[o.name] = None

    for _, sub in node_subgraphs(node):
        walk(sub, set())
    return list(found)

def used_tensor_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name ``graph``'s nodes read, including names read only inside their subgraphs, plus outputs."""
    used = {o.name for o in graph.output}
    for n in graph.node:
        used.update(i for i in n.input if i)
        used.update(outer_scope_inputs(n))
    return used

def subgraph_op_counts(graph: onnx.GraphProto, op_types: tuple[str, ...] = WEIGHTED_OPS) -> dict[str, dict[str, int]]:
    """Count ``op_types`` inside control-flow subgraphs only (the top-level graph is left out).

    Returns:
        ``{subgraph path: {op type: count}}`` for the subgraphs that hold at least one of ``op_types``
        (own nodes only: nested subgraphs get their own entry), in walk order.
    """
    out: dict[str, dict[str, int]] = {}
    for path, g in iter_graphs(graph):
        if not path:
            continue
        counts: dict[str, int] = {}
        for n in g.node:
            if n.op_type in op_types:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
        if counts:
            out[path] = counts
    return out

def describe_subgraph_ops(counts: dict[str, dict[str, int]], limit: int = 3) -> str:
    """One-line summary of :func:`subgraph_op_counts`: ``"12 Conv in 'If_0.then_branch', 2 MatMul in ..."``."""
    parts = [", ".join(f"{c} {op}" for op, c in ops.items()) + f" in '{p}'" for p, ops in list(counts.items())[:limit]]
    more = len(counts) - limit
    return "; ".join(parts) + (f"; and {more} more subgraph(s)" if more > 0 else "")
