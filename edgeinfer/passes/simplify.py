"""Graph clean-up: remove no-op nodes (Identity, inference-mode Dropout) and dead code.

Graph outputs keep their ONNX names: when a removed node produces a graph output, the tensor that
fed it is renamed to the output name instead, and when that is impossible (its input is a graph
input, a constant or another graph output) the node stays as an ``Identity``.
"""

from __future__ import annotations

from edgeinfer.ir import Graph
from edgeinfer.passes import rename_tensor, replace_uses

NO_OP = ("Identity", "Dropout")
# Trailing outputs that are optional: when nobody reads them they become "" so ops may skip them.
OPTIONAL_OUTPUTS_FROM = {"MaxPool": 1, "Dropout": 1, "BatchNormalization": 1}


def remove_no_ops(graph: Graph) -> int:
    """Remove Identity and Dropout nodes; return how many were removed."""
    removed = 0
    for node in list(graph.nodes):
        # A Dropout whose mask is read, or whose training_mode is only known at run time, stays.
        if node.op not in NO_OP or len(node.outputs) > 1 or len(node.inputs) > 1:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst not in graph.outputs:
            graph.nodes.remove(node)
            replace_uses(graph, dst, src)
        elif src in graph.inputs or src in graph.constants or src in graph.outputs:
            node.op, node.inputs, node.outputs, node.attrs = "Identity", [src], [dst], {}
            continue
        else:
            graph.nodes.remove(node)
            graph.tensors.pop(dst, None)
            rename_tensor(graph, src, dst)
        removed += 1
    return removed


def remove_dead_code(graph: Graph) -> int:
    """Drop nodes whose outputs nobody reads, unused constants and stale tensor entries.

    Returns how many nodes were removed.
    """
    needed = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.outputs if o):
            kept.append(node)
            needed.update(i for i in node.inputs if i)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    for node in graph.nodes:
        start = OPTIONAL_OUTPUTS_FROM.get(node.op)
        if start is not None:
            node.outputs = node.outputs[:start] + ["" if o not in needed else o for o in node.outputs[start:]]
            while node.outputs and not node.outputs[-1]:
                node.outputs.pop()
        if node.op == "MaxPool":
            # The op computes the costly Indices output only when told it is read.
            node.attrs.pop("num_outputs", None)
            if len(node.outputs) > 1:
                node.attrs["num_outputs"] = len(node.outputs)
    graph.constants = {k: v for k, v in graph.constants.items() if k in needed}
    live = needed | set(graph.inputs) | {o for n in graph.nodes for o in n.outputs if o}
    graph.tensors = {k: v for k, v in graph.tensors.items() if k in live}
    return removed
