"""Constant folding: a node whose inputs are all known at compile time becomes a constant.

Exporters leave Shape → Gather → Unsqueeze → Concat → Reshape chains, ConstantOfShape, Range and
weight DequantizeLinear nodes behind. With static shapes, ``Shape`` (and ``Size``) of a non-dynamic
tensor is itself a constant, so one forward sweep folds these chains completely. Results larger than
``MAX_CONST_BYTES`` stay computed at run time, as do data-dependent ops (their outputs are dynamic).
"""

from __future__ import annotations

import numpy as np

from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.ops import OPS
from edgeinfer.passes import MAX_CONST_BYTES, evaluate


def fold_constants(graph: Graph) -> int:
    """Fold every foldable node into ``graph.constants``; return how many nodes were folded."""
    kept: list[Node] = []
    for node in graph.nodes:
        values = _fold(node, graph)
        if values is None:
            kept.append(node)
            continue
        for name, value in zip(node.outputs, values):
            if name:
                value = np.array(value, order="C")  # copy; ascontiguousarray would make 0-d arrays 1-d
                value.setflags(write=False)
                graph.constants[name] = value
                graph.tensors[name] = TensorInfo(name, tuple(value.shape), value.dtype.name)
    folded = len(graph.nodes) - len(kept)
    graph.nodes = kept
    return folded


def _fold(node: Node, graph: Graph) -> list[np.ndarray] | None:
    """The node's output values if it can be folded, else None."""
    spec = OPS.get(node.op)
    outputs = [graph.tensors[o] for o in node.outputs if o]
    if spec is None or spec.dynamic_shape or any(t.dynamic for t in outputs):
        return None
    if sum(t.nbytes for t in outputs) > MAX_CONST_BYTES:
        return None
    if node.op in ("Shape", "Size"):
        source = graph.tensors[node.inputs[0]]
        if source.dynamic:
            return None
        shape = np.asarray(source.shape, dtype=np.int64)
        if node.op == "Size":
            return [np.asarray(np.prod(shape), dtype=np.int64)]
        return [shape[node.attrs.get("start", 0) : node.attrs.get("end", len(shape))]]
    if not all(i in graph.constants for i in node.inputs if i):
        return None
    return evaluate(node, [graph.constants[i] if i else None for i in node.inputs])
