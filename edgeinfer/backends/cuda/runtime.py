"""CUDA devices through CuPy: enumeration, device keys, a test kernel per device.

CuPy is imported here only when devices are listed, so that edgeinfer imports and runs without it; where CuPy,
the driver or a device is missing, ``list_devices`` returns one unusable row saying which, as ``edgeinfer
devices`` shows it. Every device must build (through program_cache, the path the kernels take) and run a tiny
kernel before it is called usable.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.errors import DeviceError
from edgeinfer.tuned_configs import ConfigTable, load_table, sanitize_key, with_lent_entries

NAME = "cuda"
# Also the family of NVIDIA's OpenCL GPUs (platform "NVIDIA CUDA"), whose tuned tables CUDA borrows.
FAMILY = "nvidia-cuda-gpu"

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
        family=FAMILY,
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


def select_device(spec: str | None) -> DeviceInfo:
    """``"cuda"``/None: the first usable device; ``"cuda:N"``: device N. DeviceError saying why where it is not
    usable (no cupy, no driver, no device, a failed test build)."""
    devices = list_devices()
    if spec in (None, NAME):
        usable = [d for d in devices if d.usable]
        if not usable:
            reasons = "; ".join(f"{d.spec} {d.name}: {d.reason}" for d in devices)
            raise DeviceError(f"no usable CUDA device ({reasons})")
        return usable[0]
    for info in devices:
        if info.spec == spec:
            if not info.usable:
                raise DeviceError(f"CUDA device {spec} ({info.name}) is not usable: {info.reason}")
            return info
    if len(devices) == 1 and not devices[0].usable:
        raise DeviceError(f"no CUDA device {spec!r}: {devices[0].reason}")
    raise DeviceError(f"no CUDA device {spec!r}; expected 'cuda' or one of: {', '.join(d.spec for d in devices)}")


def opencl_table_key(name: str) -> str:
    """The key NVIDIA's OpenCL driver gives the same GPU (platform "NVIDIA CUDA", vendor "NVIDIA Corporation"):
    opencl/runtime.py device_key."""
    return sanitize_key(f"NVIDIA CUDA NVIDIA Corporation {name}")


def config_table(info: DeviceInfo) -> ConfigTable:
    """The tuned table the CUDA kernels take their knobs from: ``tuned_configs/cuda/<key>.json`` (the user's,
    ``edgeinfer tune --device cuda``, over the shipped one), completed per workload by the same GPU's OpenCL table
    (the CUDA kernels are the OpenCL templates with the same knobs, on the same GPU): an exact CUDA entry first,
    then an exact OpenCL one, then the nearest of either (tuned_configs.with_lent_entries). Templates neither has
    are borrowed from the family: another GPU's CUDA table, else another GPU's OpenCL table. Configs from an OpenCL
    table say ``via <its key>`` in explain(), ``(the device's OpenCL table)`` where it is this GPU's."""
    table = load_table(NAME, info.device_key, info.family, "simt")
    opencl = load_table("opencl", opencl_table_key(info.name), FAMILY, "simt")
    if opencl.entries:
        return with_lent_entries(table, opencl, f"{opencl.device_key} (the device's OpenCL table)")
    if table.fallback is None and opencl.fallback is not None:  # no CUDA table in the family: an OpenCL one
        return replace(table, fallback=opencl.fallback)
    return table
