"""How a CUDA device plans a graph, shared by the executor and the tuner: the graph in the device's layout and the
planning context with the device's facts (as opencl/plans.py does for OpenCL). Driver-free: CuPy is not imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.cuda.runtime import config_table
from edgeinfer.cpu_isa import ISA_CLASSES
from edgeinfer.ir import Graph
from edgeinfer.planning import layout
from edgeinfer.planning.context import PlanContext
from edgeinfer.planning.plan import Launch
from edgeinfer.tuned_configs import ConfigTable


def device_graph(graph: Graph) -> Graph:
    """The graph as a CUDA device plans it: GPUs keep NCHW (unchanged)."""
    return layout.for_device(graph, "gpu", ISA_CLASSES["simt"])


def plan_context(
    graph: Graph,
    info: DeviceInfo,
    table: ConfigTable | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    work_group_limit: Callable[[Launch], int] | None = None,
    half_storage: bool = False,
) -> PlanContext:
    """The planning context of ``graph`` (already in the device's layout) on the CUDA device ``info``; ``table``:
    the device's tuned table (runtime.config_table) unless given; ``half_storage``: float tensors stored as half
    (planning/half_storage.py)."""
    table = config_table(info) if table is None else table
    return PlanContext(graph, table, "gpu", int(info.details["max_work_group_size"]), overrides or {},
                       work_group_limit, ISA_CLASSES["simt"], int(info.details.get("compute_units", 0)),
                       half_storage)  # fmt: skip
