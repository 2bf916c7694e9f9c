"""Placement: which nodes a device backend may run, and which stay on the CPU (NumPy).

CPU: ops whose ``OpSpec.cpu_only`` is set (sorting, data-dependent selection) and every node that
reads or writes a dynamic tensor, since device memory is planned for static shapes only.
"""

from __future__ import annotations

from edgeinfer.ir import CPU, DEVICE, Graph
from edgeinfer.ops import OPS


def place_nodes(graph: Graph) -> int:
    """Set ``Node.placement`` on every node; return how many nodes go to the CPU."""
    on_cpu = 0
    for node in graph.nodes:
        spec = OPS[node.op]
        dynamic = any(graph.tensors[t].dynamic for t in (*node.inputs, *node.outputs) if t)
        node.placement = CPU if spec.cpu_only or dynamic else DEVICE
        on_cpu += node.placement == CPU
    return on_cpu
