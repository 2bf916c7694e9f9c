"""The NumPy backend (device name ``"cpu"``): the reference for every other backend and their fallback.

``executor`` runs the graph with one module per executor plan (``concat``, ``row_padded``, ``pool_epilogue``);
``kernels`` holds the backend's own Conv, MaxPool and Concat (``conv_channels_last``, ``layout``) over the plain
NCHW ops of :mod:`edgeinfer.ops`; ``native_kernels`` binds the optional C kernels (``edgeinfer._cpu_kernels``).
"""

from __future__ import annotations

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.executor import NumpyExecutable, run_node
from edgeinfer.errors import DeviceError
from edgeinfer.ir import Graph

NAME = "cpu"
PURE = "cpu:numpy"  # the pure NumPy paths even where the native kernels are built

__all__ = ["NAME", "PURE", "NumpyExecutable", "list_devices", "prepare", "run_node"]


def list_devices() -> list[DeviceInfo]:
    if native_kernels.available():
        kernels = f"native kernels, {native_kernels.isa()} build"
    else:
        kernels = f"no native kernels: {native_kernels.status()}"
    return [
        DeviceInfo(backend=NAME, spec=NAME, name=f"NumPy on the host CPU ({kernels})", kind="cpu"),
        DeviceInfo(backend=NAME, spec=PURE, name="NumPy on the host CPU, pure NumPy (no native kernels)", kind="cpu"),
    ]


def prepare(graph: Graph, device: str | None = None) -> NumpyExecutable:
    """``device`` ``"cpu"`` (native kernels where built) or ``"cpu:numpy"`` (pure NumPy)."""
    if device not in (None, NAME, PURE):
        raise DeviceError(f"unknown NumPy backend device {device!r}; expected {NAME!r} or {PURE!r}")
    return NumpyExecutable(graph, native=False if device == PURE else None)
