"""The plan data model: what a planner says about one node, for any GPU API to run.

A :class:`KernelPlan` names the template it uses, its config and where the config came from (tuned table, nearest
tuned workload, heuristic default, override) and lists the launches that compute the node: kernel enqueues
(:class:`Launch`) and whole-tensor copies (:class:`BufferCopy`). A launch's arguments are in the order of the
kernel's signature; tensors are named (:class:`TensorArg`), constants are numpy arrays (uploaded once), scalars are
numpy scalars. A planner that cannot handle a node raises :class:`NoKernel`; the node then runs on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeinfer.ir import Node

# Epilogue residual modes (the kernels' ``has_z`` argument): Z added before the activation (the compiler's fused
# Conv input), or after it (act(conv) + Z: rewrites.fuse_residual_adds).
NO_RESIDUAL, RESIDUAL_BEFORE_ACTIVATION, RESIDUAL_AFTER_ACTIVATION = 0, 1, 2


@dataclass(frozen=True)
class TensorArg:
    """A kernel argument bound to the device buffer of graph tensor ``name``."""

    name: str


@dataclass(frozen=True)
class GuardedTensorArg(TensorArg):
    """A tensor the kernel also reads up to the allocator's guard BEFORE its first element (window.cl's row
    taps): bound as two arguments, a buffer that starts that many bytes earlier and the offset (in elements) of
    the tensor in it; the kernel adds the offset to the pointer (context.GUARD_BYTES says why)."""


@dataclass(frozen=True)
class ScratchArg:
    """A device buffer of at least ``floats`` floats that lives only while its plan runs: one launch of the plan
    writes partial results into it for the next to read (the split-K sum of conv_gemm.cl). Launches run one after
    another, so an executable binds every ScratchArg to the same buffer, as large as the largest asked for."""

    floats: int


@dataclass(frozen=True)
class Epilogue:
    """Where a convolution launch's epilogue arguments sit in its ``args``: the residual Z, the output Y and the
    residual mode ``has_z`` (NO_RESIDUAL, RESIDUAL_BEFORE_ACTIVATION, RESIDUAL_AFTER_ACTIVATION). Every kernel whose
    launch carries one accepts all three modes, so a rewrite may rebind Z and Y and set the mode by these slots."""

    z_slot: int
    y_slot: int
    has_z_slot: int


@dataclass
class Launch:
    """One kernel enqueue. ``args`` are TensorArg, ScratchArg, numpy arrays (constants uploaded once) or numpy
    scalars."""

    template: str
    kernel: str
    args: list[Any]
    work: tuple[int, ...]  # work-items needed per dimension (the global size before rounding up)
    local: tuple[int, ...]
    defines: dict[str, Any] = field(default_factory=dict)
    epilogue: Epilogue | None = None  # convolution kernels: where Z, Y and has_z are

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

    def tensors(self) -> set[str]:
        """Every tensor the launches name (read or written; a copy's source only)."""
        names: set[str] = set()
        for launch in self.launches:
            if isinstance(launch, BufferCopy):
                names.add(launch.src)
            else:
                names.update(arg.name for arg in launch.args if isinstance(arg, TensorArg))
        return names


def scratch_floats(plans: list[KernelPlan | None]) -> int:
    """The floats of the one scratch buffer that ``plans`` need (0: none)."""
    sizes = [arg.floats for plan in plans if plan for launch in plan.launches if isinstance(launch, Launch)
             for arg in launch.args if isinstance(arg, ScratchArg)]  # fmt: skip
    return max(sizes, default=0)


class NoKernel(Exception):
    """The node has no device kernel; the message says why (shown by explain())."""


@dataclass
class NodeRecord:
    """How one node runs: its kernel plan, or None and why it runs on the host (explain(), profile())."""

    node: Node
    plan: KernelPlan | None
    fallback_reason: str = ""
