"""Backend registry: find backends by name and pick a device for ``Session(device=...)``.

Backends are imported lazily so that ``import edgeinfer`` needs only numpy, and a missing optional
package (pyopencl, cupy) makes its backend unavailable with a reason instead of an ImportError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.errors import DeviceError

# The NumPy backend's name, which is also its device name: not a node placed on the host (ir.HOST) nor an OpenCL
# device of kind "cpu" (PoCL).
NUMPY_BACKEND = "cpu"
# Device-name prefix -> module implementing the backend interface (see base.py).
BACKEND_MODULES = {
    "cpu": "edgeinfer.backends.numpy",
    "opencl": "edgeinfer.backends.opencl",
    "cuda": "edgeinfer.backends.cuda",
}


def get_backend(name: str) -> ModuleType:
    """Import and return the backend module ``name`` ("cpu", "opencl", ...)."""
    if name not in BACKEND_MODULES:
        raise DeviceError(f"unknown backend {name!r}; expected one of {sorted(BACKEND_MODULES)}")
    try:
        return importlib.import_module(BACKEND_MODULES[name])
    except ImportError as e:
        raise DeviceError(f"backend {name!r} is unavailable: {e}") from e


def backend_status() -> dict[str, str]:
    """Backend name -> "" when importable, else the reason it is unavailable."""
    status = {}
    for name in BACKEND_MODULES:
        try:
            get_backend(name)
            status[name] = ""
        except DeviceError as e:
            status[name] = str(e)
    return status


def list_all_devices() -> list[DeviceInfo]:
    """Every device of every importable backend, usable or not (with the reason)."""
    devices: list[DeviceInfo] = []
    for name, reason in backend_status().items():
        if not reason:
            devices.extend(get_backend(name).list_devices())
    return devices


def resolve_device(spec: str) -> tuple[ModuleType, str]:
    """Turn a device spec ("auto", "cpu", "opencl", "opencl:0:1", "cuda", "cuda:0") into (backend module, spec).

    ``"auto"`` prefers a usable CUDA device, then a usable GPU, then any other usable accelerator device, then the
    NumPy backend.
    """
    if spec == "auto":
        usable = [d for d in list_all_devices() if d.usable and d.backend != NUMPY_BACKEND]
        usable.sort(key=lambda d: (d.backend != "cuda", d.kind != "gpu"))
        if usable:
            return get_backend(usable[0].backend), usable[0].spec
        return get_backend(NUMPY_BACKEND), NUMPY_BACKEND
    backend = spec.split(":", 1)[0]
    return get_backend(backend), spec
