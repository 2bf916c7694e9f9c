"""FLOP counts per node, for ``edgeinfer info`` and for judging measured kernel times.

Convention: a multiply-add counts 2 FLOPs (Conv, ConvTranspose, Gemm, MatMul); a pooling window
element, an elementwise op or an activation counts 1 per element it touches; data movement
(Reshape, Transpose, Concat, Slice, ...) counts 0.
"""

from __future__ import annotations

import math

from edgeinfer.ir import Graph, Node

MOVEMENT_OPS = {
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Shape",
    "Size",
    "Identity",
    "Expand",
    "Tile",
    "Pad",
    "Cast",
    "ConstantOfShape",
    "Range",
    "DepthToSpace",
    "SpaceToDepth",
}
# Rough cost per output element of ops that do more than one operation per element.
PER_ELEMENT = {"Softmax": 5, "LogSoftmax": 5, "Resize": 4, "HardSwish": 3, "HardSigmoid": 3, "Sigmoid": 3}


def count_flops(graph: Graph) -> dict[str, int]:
    """FLOPs of every node, by node name."""
    return {node.name: node_flops(node, graph) for node in graph.nodes}


def node_flops(node: Node, graph: Graph) -> int:
    """Approximate FLOPs one run of ``node`` performs."""

    def shape(i: int) -> tuple[int, ...]:
        return graph.tensors[node.inputs[i]].shape

    out = graph.tensors[node.outputs[0]].shape if node.outputs and node.outputs[0] else ()
    out_elems = math.prod(out)
    if node.op == "Conv":
        w = shape(1)
        macs = out_elems * math.prod(w[1:])
        extra = sum(1 for i in node.inputs[2:] if i) + (1 if "activation" in node.attrs else 0)
        return 2 * macs + extra * out_elems
    if node.op == "ConvTranspose":
        w = shape(1)
        return 2 * math.prod(shape(0)) * math.prod(w[1:])
    if node.op in ("Gemm", "MatMul"):
        a = shape(0)
        k = a[-2] if node.op == "Gemm" and node.attrs.get("transA", 0) else a[-1]
        return 2 * out_elems * k
    if node.op in ("MaxPool", "AveragePool", "LpPool"):
        return out_elems * math.prod(node.attrs["kernel_shape"])
    if node.op.startswith("Global") or node.op.startswith("Reduce"):
        return math.prod(shape(0))
    if node.op in MOVEMENT_OPS:
        return 0
    return out_elems * PER_ELEMENT.get(node.op, 1)
