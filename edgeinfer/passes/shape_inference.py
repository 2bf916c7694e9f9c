"""Complete the tensor table: every tensor gets a concrete shape and dtype.

The frontend records what onnx's shape inference found. This pass walks the nodes in order and, for
every node with an output still unknown (or downstream of a data-dependent op), runs the node's
NumPy implementation: on the real values where the inputs are known at compile time (constants,
shapes of static tensors and whatever is computed from them, so a Reshape whose target shape comes
from a Shape→Gather→Concat chain gets its exact shape) and on zeros of the right shape otherwise.
Outputs of ops with ``OpSpec.dynamic_shape`` and everything computed from them are marked dynamic.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.errors import CompileError
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.ops import OPS
from edgeinfer.passes import MAX_CONST_BYTES, evaluate

# Ops that later passes remove or rewrite (they may have no NumPy implementation): output 0 is input 0's shape.
SAME_SHAPE_OPS = {"BatchNormalization", "Dropout", "Identity"}


def infer_shapes(graph: Graph) -> None:
    """Fill ``graph.tensors`` for every node output; mark data-dependent tensors dynamic."""
    for name, arr in graph.constants.items():
        graph.tensors[name] = TensorInfo(name, tuple(arr.shape), arr.dtype.name)
    values = _CompileTimeValues(graph)
    for node in graph.nodes:
        outputs = [o for o in node.outputs if o]
        spec = OPS.get(node.op)
        dynamic = (spec is not None and spec.dynamic_shape) or any(graph.tensors[i].dynamic for i in node.inputs if i)
        if all(o in graph.tensors for o in outputs) and not dynamic:
            continue
        if node.op in SAME_SHAPE_OPS:
            source = graph.tensors[node.inputs[0]]
            graph.tensors[node.outputs[0]] = TensorInfo(node.outputs[0], source.shape, source.dtype, source.dynamic)
            continue
        results = _evaluate(node, graph, values)
        for name, value in zip(node.outputs, results):
            if name:
                graph.tensors[name] = TensorInfo(name, tuple(value.shape), value.dtype.name, dynamic)


class _CompileTimeValues:
    """Values known at compile time, computed on demand: constants, shapes of static tensors, and
    small results of nodes whose inputs are all known."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers = graph.producers()
        self.cache: dict[str, np.ndarray | None] = dict(graph.constants)

    def get(self, name: str) -> np.ndarray | None:
        if name not in self.cache:
            self.cache[name] = None  # guards against cycles in a malformed graph
            node = self.producers.get(name)
            if node is not None:
                self._compute(node)
        return self.cache[name]

    def _compute(self, node: Node) -> None:
        tensors = self.graph.tensors
        if node.op not in OPS or any(tensors.get(o) is None or tensors[o].dynamic for o in node.outputs if o):
            return
        if sum(tensors[o].nbytes for o in node.outputs if o) > MAX_CONST_BYTES:
            return
        if node.op == "Shape":
            source = tensors.get(node.inputs[0])
            if source is not None and not source.dynamic:
                shape = np.asarray(source.shape, dtype=np.int64)
                self.cache[node.outputs[0]] = shape[node.attrs.get("start", 0) : node.attrs.get("end", len(shape))]
            return
        args = [self.get(i) if i else None for i in node.inputs]
        if any(a is None for i, a in zip(node.inputs, args) if i):
            return
        for name, value in zip(node.outputs, evaluate(node, args)):
            if name:
                self.cache[name] = value


def _evaluate(node: Node, graph: Graph, values: _CompileTimeValues) -> list[np.ndarray]:
    """Run the node on compile-time values, or zeros of the recorded shape for the other inputs."""
    args: list[np.ndarray | None] = []
    for name in node.inputs:
        value = values.get(name) if name else None
        if not name:
            args.append(None)
        elif value is not None:
            args.append(value)
        elif name in graph.tensors:
            info = graph.tensors[name]
            args.append(np.zeros(info.shape, dtype=info.dtype))
        else:
            raise CompileError(f"node {node.name!r} ({node.op}) reads {name!r}, which no node produces")
    try:
        return evaluate(node, args)
    except Exception as e:
        raise CompileError(f"cannot infer the output shape of node {node.name!r} ({node.op}): {e}") from e
