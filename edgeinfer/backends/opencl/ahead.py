"""Building ahead: which OpenCL programs a pack needs on a device, and whether the disk cache holds them.

``edgeinfer prepare PACK --device D`` fills the cache before the first user-facing run (an image build, a
board's first boot); ``--check`` only says what is cached. The programs are found by planning the pack as the
executor does (layout and channel block of the device, tuned configs) without building anything: a program is
(template source, build options), the key of program_cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyopencl as cl

from edgeinfer.backends.opencl import program_cache
from edgeinfer.backends.opencl.plans import device_graph, launch_program, plan_context
from edgeinfer.backends.opencl.runtime import OpenCLDevice, select_device
from edgeinfer.ir import Graph
from edgeinfer.planning.context import guard_bytes
from edgeinfer.planning.plan import Launch
from edgeinfer.planning.registry import plan_graph
from edgeinfer.planning.rewrites import rewrite_plans


@dataclass
class ProgramStatus:
    device_key: str
    needed: int  # distinct programs the planned kernels use (device pre-processing not counted)
    cached: int  # of those, how many the disk cache holds
    cache_dir: str


def program_status(graph: Graph, device: str) -> ProgramStatus:
    """How many of the programs ``graph`` needs on ``device`` are in the disk cache (nothing is built)."""
    keys, opencl_device = needed_programs(graph, device)
    cached = count_cached(keys, opencl_device.device)
    return ProgramStatus(opencl_device.info.device_key, len(keys), cached, str(program_cache.cache_dir()))


def count_cached(keys: set[str], cl_device: cl.Device) -> int:
    """How many of the programs of cache keys ``keys`` the disk cache holds for ``cl_device`` (a file test each)."""
    return sum(program_cache.is_cached(key, cl_device) for key in keys)


def needed_programs(graph: Graph, device: str) -> tuple[set[str], OpenCLDevice]:
    """The cache keys of the programs ``graph``'s planned kernels use on ``device``, and that device. Planned and
    rewritten as the executor does (a rewrite such as a zero-copy Concat drops launches), so that every key is one a
    load builds: a key no load builds would make a warm load look cold for ever (background_build). The copy kernels
    of BufferCopy launches are left out (whether one is a view depends on the buffers); missing one costs a load one
    small build, never a wrong "cached"."""
    opencl_device = select_device(device)
    info, cl_device = opencl_device.info, opencl_device.device
    planned = device_graph(graph, opencl_device)
    records = plan_graph(planned, plan_context(planned, opencl_device))
    align = max(cl_device.mem_base_addr_align // 8, 1)  # bits -> bytes, as the executor
    rewrite_plans(records, planned, align, guard_bytes(align))
    keys = set()
    for record in records:
        for launch in record.plan.launches if record.plan is not None else []:
            if isinstance(launch, Launch) and 0 not in launch.work:  # an empty launch builds nothing
                source, options = launch_program(launch, cl_device)
                keys.add(program_cache.cache_key(source, options, cl_device, info.device_key))
    return keys, opencl_device
