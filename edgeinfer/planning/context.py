"""What a planner may read and the helpers every planner family shares.

:class:`PlanContext` holds the graph, the device's tuned-config table (the lookup: tuned, nearest tuned workload,
borrowed, else the planner's heuristic default) and the device facts a plan depends on, as plain values, so planning
needs no driver. :class:`KnobSpace` registrations (``KNOB_SPACES``, filled by ``@knob_space`` next to each planner)
are what the tuner searches. ``GUARD_BYTES`` is the guard-band contract between the planners and every API's
allocator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeinfer.activations import CODES
from edgeinfer.cpu_isa import ISA_CLASSES, IsaClass
from edgeinfer.ir import Graph, Node
from edgeinfer.planning.plan import Launch, NoKernel
from edgeinfer.tuned_configs import ConfigTable

# The guard band: every device tensor buffer has at least this much slack before and after it. The convolution
# kernels read whole input vectors also where some lanes fall in the zero padding and discard those lanes
# (kernels/opencl/window.cl); at the first and last rows of a tensor such a vector reaches a few floats outside it,
# and the planners check that no read reaches further than this (conv.check_row_reach). Each API's allocator
# leaves it (backends/opencl/memory.py: where the device aligns sub-buffers coarser, the guard is rounded up).
GUARD_BYTES = 256


def guard_bytes(align: int) -> int:
    """The guard on a device that starts buffers only at multiples of ``align`` bytes: GUARD_BYTES rounded up."""
    return -(-GUARD_BYTES // align) * align


@dataclass
class PlanContext:
    """What a planner may read: the graph, the device's config table and a few device limits."""

    graph: Graph
    table: ConfigTable
    device_kind: str  # "gpu", "cpu", "accelerator"
    max_work_group_size: int
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # template -> forced config (tuner)
    # The largest work-group the compiled kernel of a launch can run with (None: not known while planning).
    # Planners whose tiles need their whole work-group (gemm_local) check it and choose another kernel.
    work_group_limit: Callable[[Launch], int] | None = None
    # The vector ISA class the device's kernels compile for (CPU devices: lanes and registers that tiles must
    # fit; cpu_isa.py); "simt" on GPUs.
    isa: IsaClass = ISA_CLASSES["simt"]
    # Compute units (GPU multiprocessors) that the work-groups of one launch should fill; 0: not known.
    compute_units: int = 0
    # fp16 packs on GPUs: float tensors are stored as half (planning/half_storage.py); planners move them as
    # HALF_BITS patterns (tensor.element_type) and plan_graph adapts every launch.
    half_storage: bool = False

    def config(self, template: str, workload: dict[str, Any], default: Callable[[], dict[str, Any]]):
        """(config, source) for ``template`` on ``workload``."""
        if template in self.overrides:
            return dict(self.overrides[template]), "override"
        return self.table.lookup(template, workload, default, lambda config: self.in_knob_space(template, workload,
                                                                                                config))  # fmt: skip

    def in_knob_space(self, template: str, workload: dict[str, Any], config: dict[str, Any]) -> bool:
        """Whether ``config`` is one of the template's candidates for ``workload`` on this device (a config
        borrowed from another ISA class's table must fit this device's registers)."""
        space = KNOB_SPACES.get(template)
        if space is None:
            return True
        wanted = _canonical(config)
        return any(_canonical(c) == wanted for c in space.candidates(workload, self))

    def whole_group_shortfall(self, launch: Launch) -> str | None:
        """Why ``launch``, whose tiles are sized by its work-group, cannot run with that whole group on this
        device (the compiled kernel allows fewer work-items); None if it can or the limit is unknown."""
        needed = int(np.prod(launch.local))
        limit = self.work_group_limit(launch) if self.work_group_limit else None
        if limit is None or limit >= needed:
            return None
        return f"{launch.kernel} needs {needed} work-items, the kernel allows {limit}"

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.tensors[name].shape

    def dtype(self, name: str) -> str:
        if name in self.graph.constants:
            return str(self.graph.constants[name].dtype)
        return self.graph.tensors[name].dtype

    def constant(self, name: str) -> np.ndarray | None:
        return self.graph.constants.get(name) if name else None

    def require_float(self, node: Node, names: list[str]) -> None:
        for name in names:
            if name and self.dtype(name) != "float32":
                raise NoKernel(f"dtype {self.dtype(name)} of {name!r}, kernels take float32")


@dataclass(frozen=True)
class KnobSpace:
    """The knobs of one template, defined once next to it: the tuner searches ``candidates``, the docs print
    ``knobs``. ``candidates(workload, ctx)`` lists the configs worth timing for one workload on ctx's device (the
    knob ranges pruned by the workload's shape and the device: register budget, work-group limit); the
    planner's heuristic default is one of the configs the template accepts, not necessarily in the list."""

    template: str
    knobs: dict[str, str]  # knob -> what it means (docs/tuned-configs.md, edgeinfer tune --report)
    candidates: Callable[[dict[str, Any], PlanContext], list[dict[str, Any]]]


KNOB_SPACES: dict[str, KnobSpace] = {}


def knob_space(template: str, knobs: dict[str, str]):
    """Register the function below as the candidate generator of ``template`` (see :class:`KnobSpace`)."""

    def wrap(fn: Callable[[dict[str, Any], PlanContext], list[dict[str, Any]]]):
        KNOB_SPACES[template] = KnobSpace(template, knobs, fn)
        return fn

    return wrap


def activation_of(node: Node) -> tuple[int, float, float]:
    """(code, p0, p1) of a fused Conv's ``activation``/``activation_params`` attributes."""
    name = node.attrs.get("activation", "none") or "none"
    if name not in CODES:
        raise NoKernel(f"fused activation {name!r} has no kernel epilogue")
    params = [float(p) for p in node.attrs.get("activation_params", [])] + [0.0, 0.0]
    return CODES[name], params[0], params[1]


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def local_size(work: tuple[int, ...], wanted: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """``wanted`` clipped to the work (no dimension larger than needed) and to the device limit."""
    sizes = [max(1, min(w, x)) for w, x in zip(work, wanted)]
    while int(np.prod(sizes)) > limit:
        largest = int(np.argmax(sizes))
        sizes[largest] = max(1, sizes[largest] // 2)
    return tuple(sizes)


def i32(value: int) -> np.int32:
    return np.int32(value)


def f32(value: float) -> np.float32:
    return np.float32(value)
