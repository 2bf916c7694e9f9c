"""CUDA devices through CuPy: enumeration, device keys, a test kernel per device.

CuPy is imported here only when devices are listed, so that edgeinfer imports and runs without it; where CuPy,
the driver or a device is missing, ``list_devices`` returns one unusable row saying which, as ``edgeinfer
devices`` shows it. Every device must build (through program_cache, the path the kernels take) and run a tiny
kernel before it is called usable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.tuned_configs import sanitize_key

NAME = "cuda"

_TEST_SOURCE = 'extern "C" __global__ void add_one(float *x) { x[threadIdx.x] += 1.0f; }'
_NO_DEVICE = 100  # cudaErrorNoDevice; other errors of the first runtime call mean the driver is missing or too old


def device_key(name: str, compute_capability: str) -> str:
    """File-name-safe key of the tuned-config table: device name and compute capability, e.g. ``nvidia-h200-sm90``
    (tuned_configs/cuda/<key>.json)."""
    return sanitize_key(f"{name} sm{compute_capability}")


def unusable(reason: str, name: str = "CUDA") -> DeviceInfo:
    return DeviceInfo(NAME, NAME, name, "gpu", usable=False, reason=reason)


def _test_build(info: DeviceInfo) -> str:
    """Build the test kernel through the program cache and run it; "" or why it failed."""
    import cupy

    from edgeinfer.backends.cuda import program_cache
    from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS

    try:
        module = program_cache.load_module(_TEST_SOURCE, NVRTC_OPTIONS, info)
        with cupy.cuda.Device(info.details["ordinal"]):
            x = cupy.zeros(4, dtype=cupy.float32)
            module.get_function("add_one")((1,), (4,), (x,))
            host = cupy.asnumpy(x)
    except Exception as e:  # noqa: BLE001 - NVRTC, driver and CuPy errors all mean "not usable", with the message
        return f"test build failed: {' '.join(str(e).split())[:300]}"
    if not np.all(host == 1.0):
        return f"test kernel computed {host.tolist()}, expected [1, 1, 1, 1]"
    return ""


def _device_info(cupy: Any, ordinal: int) -> DeviceInfo:
    from cupy_backends.cuda.libs import nvrtc

    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(ordinal)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    compute_capability = f"{props['major']}{props['minor']}"
    info = DeviceInfo(
        backend=NAME,
        spec=f"{NAME}:{ordinal}",
        name=name,
        kind="gpu",
        device_key=device_key(name, compute_capability),
        family="nvidia-cuda-gpu",
        isa="simt",
        details={
            "ordinal": ordinal,
            "compute_capability": compute_capability,
            "driver_version": runtime.driverGetVersion(),
            "runtime_version": runtime.runtimeGetVersion(),
            "nvrtc_version": ".".join(map(str, nvrtc.getVersion())),
            "cupy_version": cupy.__version__,
            "compute_units": props["multiProcessorCount"],
            "global_mem_mb": props["totalGlobalMem"] // 2**20,
            "max_work_group_size": props["maxThreadsPerBlock"],
        },
    )
    reason = _test_build(info)
    info.usable, info.reason = not reason, reason
    return info


@lru_cache(maxsize=1)
def _probe() -> tuple[DeviceInfo, ...]:
    try:
        import cupy
    except ModuleNotFoundError as e:
        if e.name != "cupy":
            return (unusable(f"cupy does not import: {e}"),)
        return (unusable("cupy not installed"),)
    except ImportError as e:  # installed, but its CUDA libraries are not
        return (unusable(f"cupy does not import: {e}"),)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:
        if getattr(e, "status", None) == _NO_DEVICE:
            return (unusable("no device"),)
        return (unusable(f"no CUDA driver ({e})"),)
    if count == 0:
        return (unusable("no device"),)
    return tuple(_device_info(cupy, ordinal) for ordinal in range(count))


def list_devices() -> list[DeviceInfo]:
    """Every CUDA device, usable or not (with the reason); one unusable row where CUDA itself is not."""
    return list(_probe())
