"""Where every device tensor of a CUDA executable lives: byte offsets in ONE device allocation.

The allocation holds, each region with the guard band of the planning layer's contract (planning/context.py
``guard_bytes``) before and after it:

    [guard][memory-plan arena][guard]  [guard][tensor][guard] ...  [guard][constant][guard] ...

The arena region honours the memory plan's offsets (tensor at arena start + offset, as the OpenCL allocator's
sub-buffers do); the tensors the plan rewrites keep outside the arena (Concat outputs written in place, residual
targets: rewrites.Rewritten) and graph inputs and outputs get regions of their own; zero-copy Concat inputs are
offsets inside their Concat's output. On CUDA a tensor is a pointer, so none of OpenCL's sub-buffer rules apply
(memory.py there): regions start at multiples of ``ALIGN`` bytes, the start cudaMalloc guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 256  # bytes: region starts, and the alignment the plan rewrites may assume (zero-copy Concat slices)
GRID_YZ_LIMIT = 65535  # CUDA's largest grid in y and z (x allows 2**31 - 1)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass
class DeviceLayout:
    """Byte offsets of tensors and uploaded arrays in one allocation of ``size`` bytes."""

    guard: int
    size: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # tensor -> offset of its first byte

    def region(self, nbytes: int) -> int:
        """A new guarded region of ``nbytes``; returns where its payload starts."""
        start = _aligned(self.size) + self.guard
        self.size = _aligned(start + max(nbytes, 4) + self.guard)
        return start

    def place(self, name: str, nbytes: int) -> int:
        self.offsets[name] = self.region(nbytes)
        return self.offsets[name]


def grid_of(work: tuple[int, ...], local: tuple[int, ...]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of a launch: ceil(work / local) blocks of ``local`` (opencl_compat.cuh: get_global_id is
    block index * block size + thread index), padded to three dimensions."""
    pad = (1,) * (3 - len(local))
    grid = tuple(-(-w // lo) for w, lo in zip(work, local)) + pad
    return grid, tuple(local) + pad  # type: ignore[return-value]


def grid_shortfall(work: tuple[int, ...], local: tuple[int, ...]) -> str | None:
    """Why a launch cannot run as one CUDA grid (too many blocks in y or z), or None (an empty launch runs nothing)."""
    if 0 in work:
        return None
    grid, _ = grid_of(work, local)
    for axis, blocks in zip("yz", grid[1:]):
        if blocks > GRID_YZ_LIMIT:
            return f"{blocks} blocks in grid {axis}, CUDA allows {GRID_YZ_LIMIT}"
    return None
