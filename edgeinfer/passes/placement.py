"""Placement: which nodes a device backend may run, and which stay on the CPU (NumPy).

CPU: ops whose ``OpSpec.cpu_only`` is set (sorting, data-dependent selection) and every node that
reads or writes a dynamic tensor, since device memory is planned for static shapes only. Then every
node whose computed inputs all live on the CPU stays there too: sending it to the device would cost an
upload (and often a download) for a small op, so the CPU part of a graph stays one contiguous tail
instead of a ping-pong. A node that also reads a device result goes back to the device.
"""

from __future__ import annotations

from edgeinfer.ir import DEVICE, HOST, Graph
from edgeinfer.ops import OPS


def place_nodes(graph: Graph) -> int:
    """Set ``Node.placement`` on every node (in execution order); return how many nodes go to the CPU."""
    producers = graph.producers()
    for node in graph.nodes:
        spec = OPS[node.op]
        dynamic = any(graph.tensors[t].dynamic for t in (*node.inputs, *node.outputs) if t)
        computed = [t for t in node.inputs if t and t in producers]
        fed_by_cpu = bool(computed) and all(producers[t].placement == HOST for t in computed)
        node.placement = HOST if spec.cpu_only or dynamic or fed_by_cpu else DEVICE
    return sum(node.placement == HOST for node in graph.nodes)
