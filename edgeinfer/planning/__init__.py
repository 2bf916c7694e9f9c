"""The planning layer every GPU API runs on: from a graph to kernel plans, with no driver (numpy only).

A planner turns one node into a :class:`KernelPlan` (template, config from the device's tuned table or a heuristic,
launches); the device-independent rewrites adjust the plans of a whole graph; ``report`` turns them into
``explain()`` and profile rows. An API backend (``backends/opencl``) discovers devices, fills a
:class:`PlanContext` with the device's facts, then builds the plans' templates, allocates and launches.

    plan.py      the data model (TensorArg, Launch, Epilogue, BufferCopy, KernelPlan, NoKernel, NodeRecord)
    context.py   PlanContext, knob spaces, the guard-band contract, shared helpers
    registry.py  kernel_for / plan_node / plan_graph
    layout.py    the channel-blocked layout of CPU devices
    conv.py, blocked.py, tensor.py   the planner families (importing this package registers them)
    rewrites.py  residual-Add fusion, unread plans dropped, zero-copy Concats
    report.py    explain() and profile rows
"""

from edgeinfer.planning import blocked, conv, tensor  # noqa: F401 - their @kernel_for registrations
from edgeinfer.planning.context import GUARD_BYTES, KNOB_SPACES, KnobSpace, PlanContext, guard_bytes
from edgeinfer.planning.plan import BufferCopy, Epilogue, KernelPlan, Launch, NodeRecord, NoKernel, TensorArg
from edgeinfer.planning.registry import plan_graph, plan_node

__all__ = [
    "GUARD_BYTES",
    "KNOB_SPACES",
    "BufferCopy",
    "Epilogue",
    "KernelPlan",
    "KnobSpace",
    "Launch",
    "NoKernel",
    "NodeRecord",
    "PlanContext",
    "TensorArg",
    "guard_bytes",
    "plan_graph",
    "plan_node",
]
