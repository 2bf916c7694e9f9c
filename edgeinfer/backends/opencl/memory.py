"""Device buffers with a guard band: every tensor buffer has GUARD_BYTES of slack before and after it.

The convolution kernels read whole input vectors also where some lanes fall in the zero padding and
discard those lanes (kernels/opencl/window.cl); at the first and last rows of a tensor such a vector
reaches a few floats outside it. The guard makes those reads land in memory the buffer owns.

Every tensor buffer is a sub-buffer (of the arena or of its own guarded parent), and the arena's
sub-buffers nest: the memory plan puts tensors of different sizes at the same offsets, and a Concat's
slices lie inside its output. NVIDIA's driver (580.159, H100) segfaults in clReleaseMemObject when a
sub-buffer is released while a sub-buffer created after it, inside its range, is still alive (measured:
creation order and parents-first orders crash, newest-first never did). Python's deallocation of the
executable's attributes released them in such an order, so every whole-model run crashed as soon as its
executable was freed. Hence :meth:`GuardedAllocator.release`, which the executable calls to release the
sub-buffers newest first and then the parents. Also, to have fewer nested sub-buffers, one sub-buffer per
(parent, origin), as large as the largest tensor placed there, is shared by those tensors (a kernel never
touches bytes of its buffer beyond its tensor).
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
        self.views: list[cl.Buffer] = []  # every sub-buffer made here, in creation order
        self._at: dict[tuple[int, int], cl.Buffer] = {}  # (parent handle, origin) -> its one sub-buffer
        self._extents: dict[int, dict[int, int]] = {}  # arena handle -> offset -> largest tensor there

    def _view(self, parent: cl.Buffer, origin: int, nbytes: int) -> cl.Buffer:
        """The sub-buffer of ``parent`` starting at ``origin``: shared with every tensor starting there."""
        key = (parent.int_ptr, origin)
        view = self._at.get(key)
        if view is None or view.size < max(nbytes, 4):
            # A later, larger request at an origin already cut would need a second sub-buffer there: the
            # callers avoid it (arena extents are known up front, Concat outputs come before their slices).
            view = parent.get_sub_region(origin, max(nbytes, 4))
            self.views.append(view)
            self._at[key] = view
        return view

    def arena(self, nbytes: int, extents: dict[int, int] | None = None) -> cl.Buffer | None:
        """One buffer for the memory plan: tensor offsets are taken relative to the guard. ``extents`` maps
        each planned offset to the largest tensor placed there (the size of that offset's sub-buffer)."""
        if not nbytes:
            return None
        arena = cl.Buffer(self.context, MF.READ_WRITE, nbytes + 2 * self.guard)
        self.parents.append(arena)
        self._extents[arena.int_ptr] = dict(extents or {})
        return arena

    def in_arena(self, arena: cl.Buffer, offset: int, nbytes: int) -> cl.Buffer | None:
        """The sub-buffer of a planned tensor, or None if this device cannot start one at that offset."""
        origin = self.guard + offset
        if origin % self.align:
            return None
        return self._view(arena, origin, max(nbytes, self._extents.get(arena.int_ptr, {}).get(offset, 0)))

    def tensor(self, nbytes: int) -> cl.Buffer:
        """A buffer of its own for a tensor (graph inputs and outputs, Concat outputs, unplanned tensors)."""
        parent = cl.Buffer(self.context, MF.READ_WRITE, max(nbytes, 4) + 2 * self.guard)
        self.parents.append(parent)
        return self._view(parent, self.guard, nbytes)

    def slice_of(self, view: cl.Buffer, offset: int, nbytes: int) -> cl.Buffer:
        """A part of a buffer made by tensor() (OpenCL has no sub-buffers of sub-buffers: cut the parent)."""
        parent = view.get_info(cl.mem_info.ASSOCIATED_MEMOBJECT)
        origin = view.get_info(cl.mem_info.OFFSET) + offset
        return self._view(parent, origin, nbytes)

    def constant_tensor(self, queue: cl.CommandQueue, array: np.ndarray) -> cl.Buffer:
        """A guarded buffer holding a constant graph tensor that a kernel reads as a tensor."""
        array = np.ascontiguousarray(array)
        buffer = self.tensor(array.nbytes)
        if array.nbytes:
            cl.enqueue_copy(queue, buffer, array)
        return buffer

    def release(self) -> None:
        """Release every sub-buffer, newest first, then the parents (see the module docstring: other orders
        crash NVIDIA's driver). Call it only when no queued command uses the buffers any more (after a
        finish); a Python reference kept elsewhere to one of these buffers then names a released object."""
        for buffer in [*reversed(self.views), *self.parents]:
            try:
                buffer.release()
            except cl.Error:  # already released (LogicError) or the context is gone
                pass
        self.views.clear()
        self.parents.clear()
        self._at.clear()
        self._extents.clear()
