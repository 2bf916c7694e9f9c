"""Compiler passes over the IR, one per module, run in order by :mod:`edgeinfer.compiler`.

Each pass takes a :class:`~edgeinfer.ir.Graph` and changes it in place. The helpers here are the few
graph edits several passes share.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.ops import get_op

# Largest tensor a pass may materialise as a constant (folding) or evaluate at compile time.
MAX_CONST_BYTES = 64 << 20


def evaluate(node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run ``node`` with its NumPy implementation."""
    return [np.asarray(v) for v in get_op(node.op).fn(inputs, node.attrs)]


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Make every reader of tensor ``old`` read ``new`` instead (graph outputs included)."""
    for node in graph.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
    graph.outputs = [new if o == old else o for o in graph.outputs]


def rename_tensor(graph: Graph, old: str, new: str) -> None:
    """Rename a tensor everywhere: producer, readers, graph inputs and outputs, tensor table."""
    for node in graph.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
        node.outputs = [new if o == old else o for o in node.outputs]
    graph.inputs = [new if i == old else i for i in graph.inputs]
    graph.outputs = [new if o == old else o for o in graph.outputs]
    if old in graph.tensors:
        info = graph.tensors.pop(old)
        info.name = new
        graph.tensors[new] = info


def fresh_name(graph: Graph, hint: str) -> str:
    """A tensor name based on ``hint`` that the graph does not use yet."""
    name, k = hint, 1
    while name in graph.tensors or name in graph.constants:
        name, k = f"{hint}_{k}", k + 1
    return name


def add_constant(graph: Graph, hint: str, value: np.ndarray) -> str:
    """Add a read-only constant (and its tensor entry) under a fresh name; return the name."""
    name = fresh_name(graph, hint)
    value = np.array(value, order="C")  # copy; ascontiguousarray would make 0-d arrays 1-d
    value.setflags(write=False)
    graph.constants[name] = value
    graph.tensors[name] = TensorInfo(name, tuple(value.shape), value.dtype.name)
    return name
