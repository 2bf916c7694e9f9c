"""Device buffers with a guard band: every tensor buffer has GUARD_BYTES (planning/context.py, the planners' side of
the contract) of slack before and after it.

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
writes bytes of its buffer beyond its tensor).

The guard must lie INSIDE the sub-buffer a kernel is given: NVIDIA's driver does not treat a sub-buffer as a
bare pointer into its parent. A kernel reading outside the range of its sub-buffer faults (measured: with
sub-buffers cut to the exact tensor size, the first depthwise convolution of UltraFace killed the queue), and
the fault is reported later, at some following enqueue, as CL_OUT_OF_RESOURCES, after which the context is
dead (clEnqueueWriteBuffer OUT_OF_RESOURCES, clBuildProgram -9999). That was "YOLOX fails after SqueezeNet
and MobileNetV2 in one process": the address layout decided whether the reads just outside a sub-buffer hit
unmapped memory. So every sub-buffer reaches ``guard`` bytes past its tensor (clipped to the parent, which
has the guard), and the kernels that read before a tensor (the row taps of window.cl) get a second
sub-buffer that starts ``guard`` bytes earlier, with that offset as an argument (:meth:`with_front_guard`).
Device-to-device copies between sub-buffers (clEnqueueCopyBuffer) corrupted live tensors on NVIDIA
(UltraFace's boxes): the executor copies with a kernel instead.

The arena is not used on NVIDIA (:func:`use_arena`): there every enqueue of a kernel whose sub-buffers overlap
other sub-buffers of the same parent costs ~80-200 us of host time instead of ~9 us (benchmarks/
launch_overhead.py on the H100: 50 kernels on overlapping sub-buffers 79 us a launch, on disjoint ones 8.7 us),
and a liveness-planned arena is all overlapping sub-buffers. With a buffer per tensor MobileNetV2 ran in
3.1 ms instead of 6.2 ms and YOLOX-nano in 3.5 ms instead of 9-12 ms. The price is memory: the sum of the
tensors instead of the planned arena (``edgeinfer info`` prints both).
"""

from __future__ import annotations

import os

import numpy as np
import pyopencl as cl

from edgeinfer.planning.context import guard_bytes

MF = cl.mem_flags

# Test hook: when set, every parent buffer is filled with this byte when allocated (0xFF: every float lane
# a NaN), so that a kernel which lets uninitialised memory reach an output shows it on any device.
FILL_BYTE: int | None = None


def use_arena(device: cl.Device) -> bool:
    """Whether tensors share the memory plan's arena on ``device`` (else each gets a buffer of its own).
    ``EDGEINFER_OPENCL_ARENA=0|1`` overrides; by default every driver but NVIDIA's (see the module docstring)."""
    forced = os.environ.get("EDGEINFER_OPENCL_ARENA", "").strip()
    if forced not in ("", "0", "1"):
        raise ValueError(f"EDGEINFER_OPENCL_ARENA must be 0, 1 or unset, got {forced!r}")
    if forced:
        return forced == "1"
    return "nvidia" not in device.platform.vendor.lower()


class GuardedAllocator:
    """Allocates guarded buffers in one context and keeps their parents alive."""

    def __init__(self, context: cl.Context, device: cl.Device):
        self.context = context
        self.align = max(device.mem_base_addr_align // 8, 1)  # 128 bytes on PoCL, 512 on NVIDIA
        self.guard = guard_bytes(self.align)  # sub-buffer origins must be aligned
        self.parents: list[cl.Buffer] = []
        self.views: list[cl.Buffer] = []  # every sub-buffer made here, in creation order
        self._at: dict[tuple[int, int], cl.Buffer] = {}  # (parent handle, origin) -> its one sub-buffer
        self._extents: dict[int, dict[int, int]] = {}  # arena handle -> offset -> largest tensor there

    def _view(self, parent: cl.Buffer, origin: int, nbytes: int) -> cl.Buffer:
        """The sub-buffer of ``parent`` starting at ``origin``: shared with every tensor starting there. It
        reaches ``guard`` bytes past ``nbytes`` (where the parent has them): the kernels' reads past the end of
        a tensor must stay inside the sub-buffer they are given (see the module docstring)."""
        size = min(max(nbytes, 4) + self.guard, parent.size - origin)
        key = (parent.int_ptr, origin)
        view = self._at.get(key)
        if view is None or view.size < size:
            # A later, larger request at an origin already cut needs a second sub-buffer there (nested, released
            # newest first); the callers mostly avoid it (arena extents are known up front, Concat outputs come
            # before their slices).
            view = parent.get_sub_region(origin, size)
            self.views.append(view)
            self._at[key] = view
        return view

    def _fill(self, buffer: cl.Buffer) -> None:
        if FILL_BYTE is not None:
            queue = cl.CommandQueue(self.context)
            cl.enqueue_fill_buffer(queue, buffer, np.uint8(FILL_BYTE), 0, buffer.size)
            queue.finish()

    def arena(self, nbytes: int, extents: dict[int, int] | None = None) -> cl.Buffer | None:
        """One buffer for the memory plan: tensor offsets are taken relative to the guard. ``extents`` maps
        each planned offset to the largest tensor placed there (the size of that offset's sub-buffer)."""
        if not nbytes:
            return None
        arena = cl.Buffer(self.context, MF.READ_WRITE, nbytes + 2 * self.guard)
        self._fill(arena)
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
        self._fill(parent)
        self.parents.append(parent)
        return self._view(parent, self.guard, nbytes)

    def slice_of(self, view: cl.Buffer, offset: int, nbytes: int) -> cl.Buffer:
        """A part of a buffer made by tensor() (OpenCL has no sub-buffers of sub-buffers: cut the parent)."""
        parent = view.get_info(cl.mem_info.ASSOCIATED_MEMOBJECT)
        origin = view.get_info(cl.mem_info.OFFSET) + offset
        return self._view(parent, origin, nbytes)

    def with_front_guard(self, view: cl.Buffer) -> cl.Buffer:
        """A sub-buffer that starts ``guard`` bytes before ``view`` (made by this allocator) and ends where it
        ends: for the kernels that also read up to the guard before a tensor (window.cl, with the offset
        ``guard`` as a kernel argument)."""
        parent = view.get_info(cl.mem_info.ASSOCIATED_MEMOBJECT)
        origin = view.get_info(cl.mem_info.OFFSET)
        if origin < self.guard:
            raise ValueError("a tensor without a guard before it")
        return self._view(parent, origin - self.guard, view.size)

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
