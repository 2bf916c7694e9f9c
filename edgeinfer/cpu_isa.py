"""CPU instruction-set classes: the vector width and register count that CPU kernels are tiled for.

A kernel tiled for one class spills on the next: the PoCL table tuned on AVX-512 (16-lane vectors, up to 28
accumulators in 32 zmm registers) left MobileNetV2 at 2.2x onnxruntime on an AVX2-only EPYC (16 ymm registers
of 8 lanes). So planners read an :class:`IsaClass` (lanes, registers) instead of assuming one, and tuned tables
record the class they were measured on (``tuned_configs.py`` lends tables within a class first).

Where the class comes from:
- the host CPU (NumPy backend, native kernels): ``/proc/cpuinfo`` flags on x86, the machine type on ARM;
- a PoCL device: the LLVM CPU name PoCL compiles for, which is in the device name
  (``pthread-skylake-avx512-...``, ``pthread-haswell-...``) or forced with PoCL's ``POCL_LLVM_CPU_NAME``
  (with ``POCL_KERNELLIB_NAME=avx2``, how an AVX-512 machine builds and runs AVX2 code: docs/tuning.md);
- ``EDGEINFER_CPU_ISA=avx512|avx2|avx|sse|neon`` overrides both (tests, and measuring one class on another).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache

ISA_ENV = "EDGEINFER_CPU_ISA"


@dataclass(frozen=True)
class IsaClass:
    """What a CPU kernel's tiles must fit: ``lanes`` floats per vector register, ``registers`` of them."""

    name: str  # "avx512", "avx2", "avx", "sse", "neon"; "simt" for GPUs (no CPU vector registers)
    lanes: int
    registers: int

    @property
    def has_fma(self) -> bool:
        """Whether the class has a fused multiply-add instruction (AVX2 implies FMA3 here: host_isa demands both;
        AVX-only and SSE CPUs have none, and OpenCL's exact fma() is then emulated in software)."""
        return self.name not in ("avx", "sse")


ISA_CLASSES = {
    "avx512": IsaClass("avx512", 16, 32),
    "avx2": IsaClass("avx2", 8, 16),
    "avx": IsaClass("avx", 8, 16),
    "sse": IsaClass("sse", 4, 16),
    "neon": IsaClass("neon", 4, 32),
    "simt": IsaClass("simt", 16, 32),  # GPUs: kernels tile for work-items, not for vector registers
}

# LLVM CPU names (as PoCL prints them in device names) by class; the first class with a matching name wins, so
# the AVX-512 names come first ("skylake-avx512" also contains "skylake", an AVX2 part).
_LLVM_CPUS = {
    "avx512": ("avx512", "cascadelake", "cooperlake", "icelake", "tigerlake", "sapphirerapids", "emeraldrapids",
               "graniterapids", "rocketlake", "cannonlake", "knl", "knm", "znver4", "znver5", "diamondrapids"),
    "avx2": ("haswell", "broadwell", "skylake", "kabylake", "coffeelake", "cometlake", "alderlake", "raptorlake",
             "meteorlake", "arrowlake", "lunarlake", "gracemont", "znver1", "znver2", "znver3", "bdver4",
             "x86-64-v3"),
    "avx": ("sandybridge", "ivybridge", "btver2", "bdver1", "bdver2", "bdver3"),
    "neon": ("cortex-a", "neoverse", "apple-", "carmel", "aarch64", "arm64", "kryo", "thunderx"),
}  # fmt: skip


def isa_class(name: str) -> IsaClass:
    """The class called ``name`` (``avx512``, ``avx2``, ``avx``, ``sse``, ``neon``, ``simt``)."""
    if name not in ISA_CLASSES:
        raise ValueError(f"unknown CPU ISA class {name!r}; expected one of {', '.join(ISA_CLASSES)}")
    return ISA_CLASSES[name]


def _override() -> IsaClass | None:
    value = os.environ.get(ISA_ENV, "").strip().lower()
    return isa_class(value) if value else None


def isa_of_llvm_cpu(text: str) -> IsaClass:
    """The class of the LLVM CPU named in ``text`` (a PoCL device name such as ``pthread-haswell-AMD EPYC``);
    SSE where no known name appears (PoCL's generic x86-64 target)."""
    lowered = text.lower()
    for name, cpus in _LLVM_CPUS.items():
        if any(cpu in lowered for cpu in cpus):
            return ISA_CLASSES[name]
    return ISA_CLASSES["sse"]


def pocl_isa(device_name: str) -> IsaClass:
    """The class a PoCL CPU device compiles for: ``EDGEINFER_CPU_ISA``, else ``POCL_LLVM_CPU_NAME`` (PoCL's own
    switch, which does not change the device name), else the LLVM CPU in the device name."""
    forced = _override()
    if forced is not None:
        return forced
    target = os.environ.get("POCL_LLVM_CPU_NAME", "").strip()
    return isa_of_llvm_cpu(target or device_name)


@cache
def _host_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def host_isa() -> IsaClass:
    """The class of the CPU this process runs on (``EDGEINFER_CPU_ISA`` overrides)."""
    forced = _override()
    if forced is not None:
        return forced
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return ISA_CLASSES["neon"]
    flags = _host_flags()
    if "avx512f" in flags:
        return ISA_CLASSES["avx512"]
    if "avx2" in flags and "fma" in flags:
        return ISA_CLASSES["avx2"]
    if "avx" in flags:
        return ISA_CLASSES["avx"]
    return ISA_CLASSES["sse"]
