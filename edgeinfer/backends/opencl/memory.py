"""Device buffers with a guard band: every tensor buffer has GUARD_BYTES of slack before and after it.

The convolution kernels read whole input vectors also where some lanes fall in the zero padding and
discard those lanes (kernels/opencl/window.cl); at the first and last rows of a tensor such a vector
reaches a few floats outside it. The guard makes those reads land in memory the buffer owns.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

GUARD_BYTES = 256  # at least this much slack on both sides (more where the device aligns sub-buffers coarser)

MF = cl.mem_flags


class GuardedAllocator:
    """Allocates guarded buffers in one context and keeps their parents alive."""

    def __init__(self, context: cl.Context, device: cl.Device):
        self.context = context
        self.align = max(device.mem_base_addr_align // 8, 1)  # 128 bytes on PoCL, 512 on NVIDIA
        self.guard = -(-GUARD_BYTES // self.align) * self.align  # sub-buffer origins must be aligned
        self.parents: list[cl.Buffer] = []

    def arena(self, nbytes: int) -> cl.Buffer | None:
        """One buffer for the memory plan: tensor offsets are taken relative to the guard."""
        if not nbytes:
            return None
        arena = cl.Buffer(self.context, MF.READ_WRITE, nbytes + 2 * self.guard)
        self.parents.append(arena)
        return arena

    def in_arena(self, arena: cl.Buffer, offset: int, nbytes: int) -> cl.Buffer | None:
        """The sub-buffer of a planned tensor, or None if this device cannot start one at that offset."""
        origin = self.guard + offset
        if origin % self.align:
            return None
        return arena.get_sub_region(origin, max(nbytes, 4))

    def tensor(self, nbytes: int) -> cl.Buffer:
        """A buffer of its own for a tensor (graph inputs and outputs, Concat outputs, unplanned tensors)."""
        parent = cl.Buffer(self.context, MF.READ_WRITE, max(nbytes, 4) + 2 * self.guard)
        self.parents.append(parent)
        return parent.get_sub_region(self.guard, max(nbytes, 4))

    def slice_of(self, view: cl.Buffer, offset: int, nbytes: int) -> cl.Buffer:
        """A part of a buffer made by tensor() (OpenCL has no sub-buffers of sub-buffers: cut the parent)."""
        parent = view.get_info(cl.mem_info.ASSOCIATED_MEMOBJECT)
        origin = view.get_info(cl.mem_info.OFFSET) + offset
        return parent.get_sub_region(origin, max(nbytes, 4))

    def constant_tensor(self, queue: cl.CommandQueue, array: np.ndarray) -> cl.Buffer:
        """A guarded buffer holding a constant graph tensor that a kernel reads as a tensor."""
        array = np.ascontiguousarray(array)
        buffer = self.tensor(array.nbytes)
        if array.nbytes:
            cl.enqueue_copy(queue, buffer, array)
        return buffer
