"""The OpenCL backend (device name ``"opencl"``): hand-written kernel templates, tuned configs per device,
prepared execution, and a NumPy fallback for the nodes without a kernel.

``prepare(graph, "opencl")`` picks the best usable device (GPU first); ``"opencl:<platform>:<device>"``
picks one. ``list_devices()`` shows every device with its tuned-config key and whether it is usable.
"""

from __future__ import annotations

from typing import Any

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.opencl.executor import OpenCLExecutable
from edgeinfer.backends.opencl.runtime import NAME, select_device
from edgeinfer.backends.opencl.runtime import list_devices as _list_devices
from edgeinfer.ir import Graph

__all__ = ["NAME", "OpenCLExecutable", "list_devices", "prepare"]


def list_devices() -> list[DeviceInfo]:
    """Every OpenCL device, usable or not (with the reason), and its tuned-config device key."""
    return _list_devices()


def prepare(
    graph: Graph, device: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> OpenCLExecutable:
    """Prepare ``graph`` on ``device`` ("opencl" or "opencl:P:D"). ``overrides`` forces a config per template
    (used by the tuner)."""
    return OpenCLExecutable(graph, select_device(device), overrides)
