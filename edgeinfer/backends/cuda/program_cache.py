"""Build CUDA programs once: an in-process memo plus a disk cache of compiled cubins.

Why not CuPy's own cache (``RawModule(code=...)``, ``~/.cupy/kernel_cache``): its compile path appends
``-ftz=true`` to every option list (cupy/cupy#9576), so denormals would flush to zero on CUDA and not on OpenCL,
and our ``--ftz=false`` only earns an NVRTC warning. So we call NVRTC through the bindings CuPy ships
(``cupy_backends.cuda.libs.nvrtc``) with our options only (sources.NVRTC_OPTIONS), keep the cubin, and load it
with ``cupy.RawModule(path=...)``, CuPy's public loader.

The disk key is (source, options, device key, compute capability, NVRTC version, driver version): the source
holds the compat header, the knobs and the template text, so editing any of them, or a toolkit or driver update,
makes a new entry. The cache lives in ``$EDGEINFER_CACHE_DIR/cuda`` if that variable is set, else beside the
OpenCL one (``~/.cache/edgeinfer/cuda`` on Linux). Files are written whole under a temporary name and renamed, so
concurrent loads never read a partial cubin.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.cache_dirs import program_cache_dir
from edgeinfer.errors import DeviceError

# Counts since process start; a test of a second load checks that it compiles nothing.
STATS = {"compiled": 0, "from_disk": 0, "from_memory": 0}

_memo: dict[str, Any] = {}


def cache_dir() -> Path:
    return program_cache_dir("cuda")


def cache_key(source: str, options: tuple[str, ...], info: DeviceInfo) -> str:
    details = info.details
    text = "\0".join([source, *options, info.device_key, str(details["compute_capability"]),
                      str(details["nvrtc_version"]), str(details["driver_version"])])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


def compile_cubin(source: str, options: tuple[str, ...], compute_capability: str) -> bytes:
    """NVRTC's cubin of ``source`` for ``sm_<compute_capability>``; a failed build raises DeviceError with the log."""
    from cupy_backends.cuda.libs import nvrtc

    program = nvrtc.createProgram(source, "edgeinfer.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(program, (*options, f"--gpu-architecture=sm_{compute_capability}"))
        except nvrtc.NVRTCError as e:
            raise DeviceError(f"NVRTC failed: {e}\n{nvrtc.getProgramLog(program)[-4000:]}") from e
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


def load_module(source: str, options: tuple[str, ...], info: DeviceInfo) -> Any:
    """The ``cupy.RawModule`` of ``source`` built with ``options`` for the device of ``info``: from memory, from
    the disk cache, or compiled (and cached)."""
    import cupy

    key = cache_key(source, options, info)
    module = _memo.get(f"{info.spec} {key}")  # a module is loaded into one device's context
    if module is not None:
        STATS["from_memory"] += 1
        return module
    path = cache_dir() / f"{key}.cubin"
    if path.is_file():
        STATS["from_disk"] += 1
    else:
        _store(path, compile_cubin(source, options, str(info.details["compute_capability"])))
        STATS["compiled"] += 1
    with cupy.cuda.Device(info.details["ordinal"]):
        module = cupy.RawModule(path=str(path))
    _memo[f"{info.spec} {key}"] = module
    return module


def compile_ahead(sources: list[str], options: tuple[str, ...], info: DeviceInfo) -> int:
    """Compile, in parallel, the cubins of ``sources`` that neither memory nor the disk cache holds, into the disk
    cache (``load_module`` then finds them); returns how many were compiled. NVRTC releases the GIL: the 19
    programs of MobileNetV2 took 15.3 s on one thread and 9.7 s on two (2-core VM), so a cold load on a machine
    with enough cores takes about as long as its slowest programs. A failed build raises as ``load_module``'s."""
    missing: dict[Path, str] = {}
    for source in sources:
        key = cache_key(source, options, info)
        path = cache_dir() / f"{key}.cubin"
        if f"{info.spec} {key}" not in _memo and not path.is_file():
            missing[path] = source
    if not missing:
        return 0
    compute_capability = str(info.details["compute_capability"])
    with ThreadPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
        binaries = pool.map(lambda source: compile_cubin(source, options, compute_capability), missing.values())
        for path, binary in zip(missing, binaries):
            _store(path, binary)
            STATS["compiled"] += 1
    return len(missing)


def _store(path: Path, binary: bytes) -> None:
    """Write ``binary`` under a temporary name, then rename: a concurrent reader never sees half a cubin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as part:
        part.write(binary)
    os.replace(part.name, path)
