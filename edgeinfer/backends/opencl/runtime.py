"""OpenCL platforms and devices: enumeration, device keys, a test build per device, device selection.

A platform can be installed yet broken (the pip ``pocl-binary-distribution`` fails every build with
"unknown target CPU 'generic'"), so every device must build and run a tiny kernel before it is called usable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyopencl as cl

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.opencl.program_cache import captured_compiler_output
from edgeinfer.cpu_isa import host_isa, isa_class, pocl_isa
from edgeinfer.errors import DeviceError
from edgeinfer.tuned_configs import sanitize_key

NAME = "opencl"

_TEST_SOURCE = "__kernel void add_one(__global float *x) { x[get_global_id(0)] += 1.0f; }"


@dataclass
class OpenCLDevice:
    """A usable device with its own context (one per process and device)."""

    info: DeviceInfo
    device: cl.Device
    context: cl.Context


# One in-order queue (and one profiling queue) per context, shared by every executable of that context, instead
# of two per executable (the tuner keeps dozens of executables alive). Measured on the H100: 300 queues in one
# context still ran, so the queues were not what ran out when the tuner died with CL_OUT_OF_RESOURCES (that
# was a kernel reading outside its sub-buffer, memory.py); one queue is still cheaper and orders everything.
_queues: dict[tuple[int, bool], tuple[cl.Context, cl.CommandQueue]] = {}


def shared_queue(context: cl.Context, profiling: bool = False) -> cl.CommandQueue:
    """The process-wide in-order command queue of ``context`` (with profiling enabled if ``profiling``)."""
    key = (id(context), profiling)
    entry = _queues.get(key)
    if entry is None or entry[0] is not context:
        properties = cl.command_queue_properties.PROFILING_ENABLE if profiling else 0
        entry = (context, cl.CommandQueue(context, properties=properties))
        _queues[key] = entry
    return entry[1]


def build_flags(device: cl.Device) -> str:
    """Compiler options every program of the backend gets on ``device``:

    - correctly rounded single-precision division and sqrt where the device offers them. OpenCL allows 2.5 ulp for
      ``x / y`` by default and NVIDIA's compiler takes it: QuantizeLinear's ``rint(x / scale)`` then rounds some
      values near a half the other way than the ONNX definition (and NumPy). Measured on the H100: the QDQ
      MobileNetV2's uint8 output at rel L2 0.124 from onnxruntime (basic) and the NumPy backend without the
      option, bit-exact with it;
    - ``HAS_FMA=0`` on a CPU whose ISA class has no fused multiply-add (common.cl's MAC then multiplies and adds:
      the exact fma() would be emulated in software). PoCL reports CL_FP_FMA either way, so the class decides."""
    flags = []
    if device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
        flags.append("-cl-fp32-correctly-rounded-divide-sqrt")
    if not isa_class(device_isa(device.platform, device)).has_fma:
        flags.append("-DHAS_FMA=0")
    return " ".join(flags)


def device_key(platform: cl.Platform, device: cl.Device) -> str:
    """File-name-safe key of the tuned-config table: platform, vendor and device name.

    PoCL names a CPU device after the LLVM CPU it compiles for (``pthread-haswell-AMD EPYC ...``); where
    ``POCL_LLVM_CPU_NAME`` forces another target the name does not change, so the key takes the forced one
    (an AVX-512 machine building AVX2 code gets an AVX2 key, not its own table)."""
    return sanitize_key(f"{platform.name} {device.vendor} {device_target_name(platform, device)}")


def device_target_name(platform: cl.Platform, device: cl.Device) -> str:
    """The device name, its LLVM CPU replaced by ``POCL_LLVM_CPU_NAME`` where PoCL is forced to another one."""
    name = device.name.strip()
    forced = os.environ.get("POCL_LLVM_CPU_NAME", "").strip()
    if not forced or "portable computing language" not in platform.name.lower():
        return name
    match = re.match(r"(pthread|basic|cpu)-(.+?)-(?=[A-Z(])", name)
    if match is None:
        return f"{name} {forced}"
    return f"{match.group(1)}-{forced}-{name[match.end() :]}"


def device_isa(platform: cl.Platform, device: cl.Device) -> str:
    """The vector ISA class the device's kernels are compiled for (cpu_isa.py): PoCL's LLVM CPU on CPU devices,
    "simt" on GPUs and accelerators."""
    if device_kind(device) != "cpu":
        return "simt"
    if "portable computing language" in platform.name.lower():
        return pocl_isa(device.name).name
    return host_isa().name  # another CPU driver (Intel's, Apple's) compiles for the host


def device_family(platform: cl.Platform, device: cl.Device) -> str:
    """Platform and device kind, e.g. ``portable-computing-language-cpu``: a device without a tuned table of its
    own borrows one from its family, whose compiler and kind of hardware are the same."""
    return sanitize_key(f"{platform.name} {device_kind(device)}")


def device_kind(device: cl.Device) -> str:
    if device.type & cl.device_type.GPU:
        return "gpu"
    if device.type & cl.device_type.CPU:
        return "cpu"
    return "accelerator"


def _test_build(device: cl.Device) -> tuple[cl.Context | None, str]:
    """Build and run a one-line kernel; return (context, "") or (None, why it failed)."""
    try:
        context = cl.Context([device])
        with captured_compiler_output():  # NVIDIA's build log of even this kernel made pyopencl warn on stderr
            program = cl.Program(context, _TEST_SOURCE).build()
        queue = cl.CommandQueue(context)
        host = np.zeros(4, np.float32)
        buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)
        kernel = cl.Kernel(program, "add_one")
        kernel.set_args(buffer)
        cl.enqueue_nd_range_kernel(queue, kernel, (4,), None)
        cl.enqueue_copy(queue, host, buffer)
        if not np.all(host == 1.0):
            return None, f"test kernel computed {host.tolist()}, expected [1, 1, 1, 1]"
        return context, ""
    except cl.Error as e:  # broken compilers report through build errors
        first_line = str(e).strip().splitlines()
        return None, f"test build failed: {' '.join(first_line[:3])[:300]}"


def pin_pocl_workers() -> None:
    """Ask PoCL to pin its worker threads, one per core (``POCL_AFFINITY=1``), unless the user chose.

    PoCL reads it once, when the first platform query loads it. Unpinned, its workers stay on one core for
    tens of milliseconds after the process idled (the scheduler places a woken thread beside its waker), so a
    camera loop that runs a frame every 25 ms never sees both cores. Measured on the 2-core VM, one run every
    25 ms: SqueezeNet 6.8 -> 4.7 ms, MobileNetV2 7.7 -> 5.7 ms, YOLOX-nano 16.4 -> 12.0 ms; back to back
    unchanged (docs/notes-opencl.md, session 5)."""
    os.environ.setdefault("POCL_AFFINITY", "1")


@lru_cache(maxsize=1)
def _probe() -> tuple[tuple[DeviceInfo, cl.Device | None, cl.Context | None], ...]:
    pin_pocl_workers()
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD loader entries: no platform at all
        return ()
    found = []
    for p_index, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error as e:
            info = DeviceInfo(NAME, f"{NAME}:{p_index}", platform.name, "unknown", usable=False, reason=str(e))
            found.append((info, None, None))
            continue
        for d_index, device in enumerate(devices):
            context, reason = _test_build(device)
            info = DeviceInfo(
                backend=NAME,
                spec=f"{NAME}:{p_index}:{d_index}",
                name=device.name.strip(),
                kind=device_kind(device),
                device_key=device_key(platform, device),
                family=device_family(platform, device),
                isa=device_isa(platform, device) if context is not None else "",
                usable=context is not None,
                reason=reason,
                details={
                    "platform": platform.name,
                    "vendor": device.vendor.strip(),
                    "version": device.version,
                    "driver_version": device.driver_version,
                    "compute_units": device.max_compute_units,
                    "global_mem_mb": device.global_mem_size // 2**20,
                },
            )
            found.append((info, device, context))
    return tuple(found)


def list_devices() -> list[DeviceInfo]:
    """Every OpenCL device, usable or not (with the reason)."""
    return [info for info, _, _ in _probe()]


def select_device(spec: str | None) -> OpenCLDevice:
    """``"opencl"``/None: the best usable device (GPU first); ``"opencl:P:D"``: platform P, device D."""
    probed = _probe()
    if spec in (None, NAME):
        usable = [entry for entry in probed if entry[0].usable]
        if not usable:
            reasons = "; ".join(f"{i.spec} {i.name}: {i.reason}" for i, _, _ in probed) or "no OpenCL platform found"
            raise DeviceError(f"no usable OpenCL device ({reasons})")
        usable.sort(key=lambda entry: (entry[0].kind != "gpu", entry[0].kind != "accelerator"))
        info, device, context = usable[0]
        return OpenCLDevice(info, device, context)
    for info, device, context in probed:
        if info.spec == spec:
            if not info.usable:
                raise DeviceError(f"OpenCL device {spec} ({info.name}) is not usable: {info.reason}")
            return OpenCLDevice(info, device, context)
    known = ", ".join(i.spec for i, _, _ in probed) or "none"
    raise DeviceError(f"no OpenCL device {spec!r}; expected 'opencl' or one of: {known}")
