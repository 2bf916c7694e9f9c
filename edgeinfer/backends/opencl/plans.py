"""How an OpenCL device plans a graph, shared by the executor, building ahead (ahead.py) and the tuner: the graph
in the device's layout, the planning context with the device's facts, and each launch's program."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyopencl as cl

from edgeinfer.backends.opencl.runtime import OpenCLDevice, build_flags
from edgeinfer.backends.opencl.sources import build_options, program_text
from edgeinfer.cpu_isa import isa_class
from edgeinfer.ir import Graph
from edgeinfer.planning import layout
from edgeinfer.planning.context import PlanContext
from edgeinfer.planning.plan import Launch
from edgeinfer.tuned_configs import ConfigTable, load_table


def device_graph(graph: Graph, device: OpenCLDevice) -> Graph:
    """The graph as the executor plans it on ``device`` (channel-blocked on CPUs, with the block of its ISA)."""
    return layout.for_device(graph, device.info.kind, isa_class(device.info.isa or "simt"))


def plan_context(
    graph: Graph,
    device: OpenCLDevice,
    table: ConfigTable | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    work_group_limit: Callable[[Launch], int] | None = None,
    half_storage: bool = False,
) -> PlanContext:
    """The planning context of ``graph`` (already in the device's layout) on ``device``; ``table``: the device's
    tuned table unless given; ``half_storage``: float tensors stored as half (planning/half_storage.py)."""
    info = device.info
    if table is None:
        table = load_table("opencl", info.device_key, info.family, info.isa)
    return PlanContext(graph, table, info.kind, device.device.max_work_group_size, overrides or {}, work_group_limit,
                       isa_class(info.isa or "simt"), device.device.max_compute_units, half_storage)  # fmt: skip


def launch_program(launch: Launch, cl_device: cl.Device) -> tuple[str, str]:
    """(program text, build options) of ``launch`` on ``cl_device``: what program_cache builds and keys."""
    return program_text(launch, cl_device), " ".join(filter(None, [build_options(launch.defines),
                                                                   build_flags(cl_device)]))  # fmt: skip
