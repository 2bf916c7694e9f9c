"""The CUDA backend (device name ``"cuda"``): the OpenCL kernel templates compiled as CUDA through CuPy (NVRTC),
planned by the shared planning layer, run as captured CUDA graphs with NumPy fallback nodes between them.

``prepare(graph, "cuda")`` takes the first usable device, ``"cuda:N"`` device N. CuPy is imported only when devices
are listed or a graph is prepared, so that edgeinfer imports without it; ``list_devices()`` then says why CUDA is
not usable (docs/cuda.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.cuda.runtime import NAME, select_device
from edgeinfer.backends.cuda.runtime import list_devices as _list_devices
from edgeinfer.ir import Graph

if TYPE_CHECKING:
    from edgeinfer.backends.cuda.executor import CudaExecutable

__all__ = ["NAME", "list_devices", "prepare"]


def list_devices() -> list[DeviceInfo]:
    """Every CUDA device, usable or not (with the reason); one unusable row where CUDA itself is not."""
    return _list_devices()


def prepare(
    graph: Graph, device: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> CudaExecutable:
    """Prepare ``graph`` on ``device`` ("cuda" or "cuda:N"); DeviceError where it is not usable. ``overrides``
    forces a config per template (as on OpenCL)."""
    info = select_device(device)
    from edgeinfer.backends.cuda.executor import CudaExecutable  # imports cupy

    return CudaExecutable(graph, info, overrides)
