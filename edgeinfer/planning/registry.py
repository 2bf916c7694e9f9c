"""The planner registry: which planner turns a node of each op into a :class:`KernelPlan`.

Planners live by op family in ``conv.py``, ``blocked.py`` and ``tensor.py`` and register themselves with
:func:`kernel_for`; importing ``edgeinfer.planning`` imports every family, so the registry is complete.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeinfer.ir import HOST, Graph, Node
from edgeinfer.planning.context import PlanContext
from edgeinfer.planning.half_storage import float_tensor_names, store_as_half
from edgeinfer.planning.layout import LAYOUT_ATTR
from edgeinfer.planning.plan import KernelPlan, NodeRecord, NoKernel

Planner = Callable[[Node, PlanContext], KernelPlan]
PLANNERS: dict[str, Planner] = {}
BLOCKED_PLANNERS: dict[str, Planner] = {}  # for nodes that layout.py made channel-blocked (LAYOUT_ATTR)


def kernel_for(*ops: str, blocked: bool = False) -> Callable[[Planner], Planner]:
    """Register a planner for the ONNX ops ``ops`` (``blocked``: for their channel-blocked nodes)."""

    def wrap(fn: Planner) -> Planner:
        for op in ops:
            (BLOCKED_PLANNERS if blocked else PLANNERS)[op] = fn
        return fn

    return wrap


def plan_node(node: Node, ctx: PlanContext) -> KernelPlan:
    """The kernel plan of ``node``; raises NoKernel if it must run on the host. A blocked node whose op has no
    blocked planner is elementwise and runs lane by lane through the ordinary one."""
    planner = BLOCKED_PLANNERS.get(node.op) if LAYOUT_ATTR in node.attrs else None
    planner = planner or PLANNERS.get(node.op)
    if planner is None:
        raise NoKernel(f"no kernel for {node.op}")
    for name in node.outputs:
        if name and ctx.graph.tensors[name].dynamic:
            raise NoKernel("dynamic output shape")
    return planner(node, ctx)


def plan_graph(graph: Graph, ctx: PlanContext) -> list[NodeRecord]:
    """One record per node of ``graph``: its kernel plan, or why it runs on the host."""
    float_tensors = float_tensor_names(graph) if ctx.half_storage else set()
    return [_plan_record(node, graph, ctx, float_tensors) for node in graph.nodes]


def _plan_record(node: Node, graph: Graph, ctx: PlanContext, float_tensors: set[str]) -> NodeRecord:
    if node.placement == HOST:
        return NodeRecord(node, None, "placed on the CPU by the compiler")
    if any(name and graph.tensors.get(name) is not None and graph.tensors[name].dynamic
           for name in node.inputs):  # fmt: skip
        return NodeRecord(node, None, "dynamic input shape")
    try:
        plan = plan_node(node, ctx)
        return NodeRecord(node, store_as_half(plan, float_tensors) if ctx.half_storage else plan)
    except NoKernel as e:
        return NodeRecord(node, None, str(e))
