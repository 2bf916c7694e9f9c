"""Per-op kernel selection and template rendering for the OpenCL backend.

A *planner* turns one IR node into a :class:`KernelPlan`: the template it uses, the config (from the
tuned table, the nearest tuned workload, or a heuristic default) and the launches that compute it. A
planner raises :class:`NoKernel` with a reason when it cannot handle the node; the executor then runs
that node through the NumPy backend. Planners live by op family in ``kernels_conv.py`` and
``kernels_tensor.py`` and register themselves with :func:`kernel_for`.

Templates are ``kernels/opencl/<template>.cl`` with ``common.cl`` prepended; knobs are ``-D`` options.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from edgeinfer.backends.opencl.layout import LAYOUT_ATTR
from edgeinfer.cpu_isa import ISA_CLASSES, IsaClass
from edgeinfer.ir import Graph, Node
from edgeinfer.tuned_configs import ConfigTable, data_dir

# Activation codes shared with kernels/opencl/common.cl.
ACTIVATIONS = {
    "none": 0, "relu": 1, "leaky_relu": 2, "clip": 3, "sigmoid": 4, "hard_sigmoid": 5, "hard_swish": 6,
    "silu": 7, "tanh": 8, "exp": 9, "neg": 10, "sqrt": 11, "abs": 12, "reciprocal": 13, "floor": 14,
    "ceil": 15, "elu": 16, "softplus": 17, "log": 18,
}  # fmt: skip


@dataclass(frozen=True)
class TensorArg:
    """A kernel argument bound to the device buffer of graph tensor ``name``."""

    name: str


@dataclass(frozen=True)
class GuardedTensorArg(TensorArg):
    """A tensor the kernel also reads up to the allocator's guard BEFORE its first element (window.cl's row
    taps): bound as two arguments, a sub-buffer that starts that many bytes earlier and the offset (in
    elements) of the tensor in it; the kernel adds the offset to the pointer (memory.py says why)."""


@dataclass
class Launch:
    """One kernel enqueue. ``args`` are TensorArg, numpy arrays (constants uploaded once) or numpy scalars."""

    template: str
    kernel: str
    args: list[Any]
    work: tuple[int, ...]  # work-items needed per dimension (the global size before rounding up)
    local: tuple[int, ...]
    defines: dict[str, Any] = field(default_factory=dict)

    @property
    def global_size(self) -> tuple[int, ...]:
        return tuple(-(-w // lo) * lo for w, lo in zip(self.work, self.local))


@dataclass
class BufferCopy:
    """A device-to-device copy of a whole tensor (Reshape, Flatten, Identity...)."""

    src: str
    dst: str


@dataclass
class KernelPlan:
    template: str
    config: dict[str, Any]
    config_source: str
    launches: list[Launch | BufferCopy]


class NoKernel(Exception):
    """The node has no OpenCL kernel; the message says why (shown by explain())."""


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
    """The kernel plan of ``node``; raises NoKernel if it must run on the NumPy backend. A blocked node whose
    op has no blocked planner is elementwise and runs lane by lane through the ordinary one."""
    planner = BLOCKED_PLANNERS.get(node.op) if LAYOUT_ATTR in node.attrs else None
    planner = planner or PLANNERS.get(node.op)
    if planner is None:
        raise NoKernel(f"no OpenCL kernel for {node.op}")
    for name in node.outputs:
        if name and ctx.graph.tensors[name].dynamic:
            raise NoKernel("dynamic output shape")
    return planner(node, ctx)


# Helper sources a template needs, placed between common.cl and the template.
TEMPLATE_INCLUDES = {"conv2d": ["window"], "depthwise": ["window"], "pool": ["window"]}


@cache
def template_source(template: str) -> str:
    """``common.cl``, the template's helper sources, then ``<template>.cl``."""
    directory = data_dir("kernels") / "opencl"
    parts = ["common", *TEMPLATE_INCLUDES.get(template, []), template]
    return "\n".join((directory / f"{part}.cl").read_text() for part in parts)


def build_options(defines: dict[str, Any]) -> str:
    return " ".join(f"-D{key}={value}" for key, value in sorted(defines.items()))


def activation_of(node: Node) -> tuple[int, float, float]:
    """(code, p0, p1) of a fused Conv's ``activation``/``activation_params`` attributes."""
    name = node.attrs.get("activation", "none") or "none"
    if name not in ACTIVATIONS:
        raise NoKernel(f"fused activation {name!r} has no OpenCL epilogue")
    params = [float(p) for p in node.attrs.get("activation_params", [])] + [0.0, 0.0]
    return ACTIVATIONS[name], params[0], params[1]


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


# Import the op families so that their @kernel_for decorators run.
from edgeinfer.backends.opencl import kernels_blocked, kernels_conv, kernels_tensor  # noqa: E402,F401
