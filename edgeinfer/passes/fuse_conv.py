"""Fuse what follows a Conv into the Conv itself (see docs/architecture.md, "Fused Conv").

A fused Conv computes ``Y = activation(conv(X, W) + B + Z)``, saving one full read and write of the
activation map per absorbed node. Absorbed, in this order of preference:

- a residual ``Add(conv_out, Z)`` where Z has exactly the conv output's shape and dtype (only while
  the Conv has no activation yet, since the activation applies after the sum);
- an activation: the op of a fused activation in edgeinfer/activations.py (Relu, LeakyRelu, Clip with constant
  bounds, Sigmoid, HardSigmoid, HardSwish, Tanh), and the SiLU pattern ``Mul(x, Sigmoid(x))`` that YOLO-family
  exporters emit.

An intermediate is absorbed only if exactly the fused nodes read it and it is not a graph output.
The fused node takes the position of the last node it absorbs, so every input (Z included) is
computed before it and the order stays topological.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.activations import BY_ONNX_OP
from edgeinfer.ir import Graph, Node

FLOAT_TYPES = ("float16", "float32", "float64")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def fuse_conv(graph: Graph) -> int:
    """Fuse residual adds and activations into Conv nodes until nothing changes; return the count."""
    fused = 0
    changed = True
    while changed:
        changed = False
        consumers = graph.consumers()
        for conv in [n for n in graph.nodes if n.op == "Conv"]:
            if "activation" in conv.attrs or graph.tensors[conv.outputs[0]].dtype not in FLOAT_TYPES:
                continue
            if _fuse_add(conv, graph, consumers) or _fuse_activation(conv, graph, consumers):
                fused += 1
                changed = True
                break
    return fused


def _sole_reader(name: str, graph: Graph, consumers: dict[str, list[Node]]) -> Node | None:
    """The single node reading ``name``, if there is exactly one and ``name`` is no graph output."""
    readers = consumers.get(name, [])
    if len(readers) != 1 or name in graph.outputs:
        return None
    return readers[0]


def _absorb(conv: Node, absorbed: list[Node], graph: Graph) -> None:
    """Move ``conv`` to the position of the last absorbed node and make it produce that node's output."""
    last = max(absorbed, key=graph.nodes.index)
    graph.tensors.pop(conv.outputs[0], None)
    conv.outputs = [last.outputs[0]]
    graph.nodes.remove(conv)
    graph.nodes[graph.nodes.index(last)] = conv
    for node in absorbed:
        if node is not last:
            graph.tensors.pop(node.outputs[0], None)
            graph.nodes.remove(node)


def _fuse_add(conv: Node, graph: Graph, consumers: dict[str, list[Node]]) -> bool:
    if len(conv.inputs) > 3:
        return False
    y = conv.outputs[0]
    add = _sole_reader(y, graph, consumers)
    if add is None or add.op != "Add" or add.inputs[0] == add.inputs[1]:
        return False
    z = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
    out, zi = graph.tensors[add.outputs[0]], graph.tensors[z]
    if zi.shape != graph.tensors[y].shape or zi.dtype != out.dtype or out.shape != zi.shape:
        return False
    conv.inputs = (conv.inputs + ["", ""])[:3] + [z]
    _absorb(conv, [add], graph)
    return True


def _fuse_activation(conv: Node, graph: Graph, consumers: dict[str, list[Node]]) -> bool:
    y = conv.outputs[0]
    readers = consumers.get(y, [])
    if y in graph.outputs:
        return False
    silu = _silu_pattern(y, readers, graph, consumers)
    if silu is not None:
        conv.attrs["activation"] = "silu"
        _absorb(conv, silu, graph)
        return True
    if len(readers) != 1:
        return False
    act = readers[0]
    found = _activation(act, graph)
    if found is None:
        return False
    conv.attrs["activation"], params = found
    if params:
        conv.attrs["activation_params"] = params
    _absorb(conv, [act], graph)
    return True


def _silu_pattern(y: str, readers: list[Node], graph: Graph, consumers: dict[str, list[Node]]) -> list[Node] | None:
    """``[Sigmoid(y), Mul(y, sigmoid)]`` when these two are the only readers of ``y``."""
    if len(readers) != 2:
        return None
    sig = next((n for n in readers if n.op == "Sigmoid"), None)
    mul = next((n for n in readers if n.op == "Mul"), None)
    if sig is None or mul is None or _sole_reader(sig.outputs[0], graph, consumers) is not mul:
        return None
    if sorted(mul.inputs) != sorted([y, sig.outputs[0]]):
        return None
    return [sig, mul]


def _activation(node: Node, graph: Graph) -> tuple[str, list[float]] | None:
    """The fused-activation name and parameters equivalent to ``node``, if it is one."""
    activation = BY_ONNX_OP.get(node.op)
    if activation is None or not activation.fused:
        return None
    if node.op != "Clip":
        return activation.name, [float(node.attrs.get(key, default)) for key, default in activation.params]
    bounds = []  # Clip's bounds are its inputs 1 and 2; only constant ones fuse
    for index, default in ((1, -FLOAT32_MAX), (2, FLOAT32_MAX)):
        name = node.inputs[index] if len(node.inputs) > index else ""
        if name and (name not in graph.constants or graph.constants[name].size != 1):
            return None
        value = float(graph.constants[name].reshape(())) if name else default
        bounds.append(max(min(value, FLOAT32_MAX), -FLOAT32_MAX))
    return "clip", bounds
