"""CUDA device discovery without a GPU: with CuPy absent, without a driver or device, and with a device whose test
build fails (a stand-in CuPy), discovery returns unusable rows with their reasons and never raises."""

from __future__ import annotations

import sys
import types
from contextlib import nullcontext

import pytest

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.cuda import program_cache, runtime
from edgeinfer.errors import DeviceError


@pytest.fixture(autouse=True)
def fresh_probe():
    runtime._probe.cache_clear()
    yield
    runtime._probe.cache_clear()


class FakeRuntimeError(Exception):
    def __init__(self, status: int):
        super().__init__(f"cudaError {status}")
        self.status = status


def install_fake_cupy(monkeypatch, count=None, error_status=None, compile_log="error: no nvrtc here"):
    """A stand-in ``cupy`` (and the NVRTC bindings program_cache uses) with ``count`` H200s, or whose device count
    fails with ``error_status``; NVRTC fails every build with ``compile_log``."""

    def device_count():
        if error_status is not None:
            raise FakeRuntimeError(error_status)
        return count

    cuda_runtime = types.SimpleNamespace(
        CUDARuntimeError=FakeRuntimeError,
        getDeviceCount=device_count,
        getDeviceProperties=lambda i: {
            "name": b"NVIDIA H200",
            "major": 9,
            "minor": 0,
            "multiProcessorCount": 132,
            "totalGlobalMem": 141 * 2**30,
            "maxThreadsPerBlock": 1024,
        },  # fmt: skip
        driverGetVersion=lambda: 13000,
        runtimeGetVersion=lambda: 13000,
    )
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "13.0.0"
    cupy.cuda = types.SimpleNamespace(runtime=cuda_runtime, Device=lambda i: nullcontext())

    class NVRTCError(Exception):
        pass

    def compile_program(program, options):
        raise NVRTCError("NVRTC_ERROR_COMPILATION")

    nvrtc = types.ModuleType("cupy_backends.cuda.libs.nvrtc")
    nvrtc.NVRTCError = NVRTCError
    nvrtc.getVersion = lambda: (13, 0)
    nvrtc.createProgram = lambda source, name, headers, include_names: object()
    nvrtc.compileProgram = compile_program
    nvrtc.getProgramLog = lambda program: compile_log
    nvrtc.destroyProgram = lambda program: None
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.nvrtc = nvrtc
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy_backends", types.ModuleType("cupy_backends"))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda", types.ModuleType("cupy_backends.cuda"))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs", libs)
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.nvrtc", nvrtc)


def test_without_cupy_one_unusable_row_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ModuleNotFoundError
    devices = runtime.list_devices()
    assert [(d.backend, d.spec, d.usable, d.reason) for d in devices] == [("cuda", "cuda", False, "cupy not installed")]


@pytest.mark.parametrize(("status", "reason"), [(100, "no device"), (35, "no CUDA driver")])
def test_a_failing_device_count_names_the_missing_piece(monkeypatch, status, reason):
    install_fake_cupy(monkeypatch, error_status=status)
    (device,) = runtime.list_devices()
    assert not device.usable and device.reason.startswith(reason)


def test_zero_devices_is_no_device(monkeypatch):
    install_fake_cupy(monkeypatch, count=0)
    assert [(d.usable, d.reason) for d in runtime.list_devices()] == [(False, "no device")]


def test_a_device_whose_test_build_fails_is_listed_unusable_with_the_compiler_log(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(program_cache, "_memo", {})  # a real device's probe program may be in memory (GPU machine)
    install_fake_cupy(monkeypatch, count=2, compile_log="error: no nvrtc here")
    devices = runtime.list_devices()
    assert [(d.spec, d.name, d.device_key) for d in devices] == [
        ("cuda:0", "NVIDIA H200", "nvidia-h200-sm90"),
        ("cuda:1", "NVIDIA H200", "nvidia-h200-sm90"),
    ]
    assert all(not d.usable and d.reason.startswith("test build failed") and "no nvrtc here" in d.reason
               for d in devices)  # fmt: skip
    assert devices[0].details["compute_capability"] == "90" and devices[0].details["nvrtc_version"] == "13.0"
    assert not any(tmp_path.rglob("*.cubin"))  # nothing half-built is cached


def test_device_key_is_name_and_compute_capability():
    assert runtime.device_key("NVIDIA H200", "90") == "nvidia-h200-sm90"
    assert runtime.device_key("Orin (nvgpu)", "87") == "orin-nvgpu-sm87"


def test_program_cache_key_changes_with_every_input(monkeypatch, tmp_path):
    details = {"compute_capability": "90", "nvrtc_version": "13.0", "driver_version": 13000}
    info = DeviceInfo("cuda", "cuda:0", "NVIDIA H200", "gpu", device_key="nvidia-h200-sm90", details=details)
    base = program_cache.cache_key("src", ("--ftz=false",), info)
    variants = [
        program_cache.cache_key("src2", ("--ftz=false",), info),
        program_cache.cache_key("src", ("--ftz=true",), info),
        program_cache.cache_key("src", ("--ftz=false",), DeviceInfo(**{**info.__dict__, "device_key": "other"})),
    ]
    for field, value in [("compute_capability", "87"), ("nvrtc_version", "12.4"), ("driver_version", 12040)]:
        changed = DeviceInfo(**{**info.__dict__, "details": {**details, field: value}})
        variants.append(program_cache.cache_key("src", ("--ftz=false",), changed))
    assert len({base, *variants}) == 1 + len(variants)
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path))
    assert program_cache.cache_dir() == tmp_path / "cuda"


def test_compile_ahead_builds_the_missing_cubins_in_parallel_into_the_cache(monkeypatch, tmp_path):
    """What neither memory nor disk holds is compiled (on several threads at once) and cached; a second call compiles
    nothing; a failed build raises."""
    import threading

    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(program_cache, "_memo", {})
    info = DeviceInfo("cuda", "cuda:0", "NVIDIA H200", "gpu", "nvidia-h200-sm90", "nvidia-cuda-gpu", "simt",
                      details={"ordinal": 0, "compute_capability": "90", "nvrtc_version": "13.0",
                               "driver_version": "13000"})  # fmt: skip
    threads: set[int] = set()
    both_started = threading.Barrier(2, timeout=5)

    def compile_cubin(source, options, compute_capability):
        threads.add(threading.get_ident())
        both_started.wait()  # only returns when two compiles run at the same time
        return f"cubin of {source} for sm_{compute_capability}".encode()

    monkeypatch.setattr(program_cache, "compile_cubin", compile_cubin)
    monkeypatch.setattr(program_cache.os, "cpu_count", lambda: 4)  # threads as on a machine of 4 cores
    assert program_cache.compile_ahead(["a", "b", "a"], ("-x",), info) == 2
    assert len(threads) == 2
    cached = sorted(path.read_bytes() for path in (tmp_path / "cuda").glob("*.cubin"))
    assert cached == [b"cubin of a for sm_90", b"cubin of b for sm_90"]
    assert program_cache.compile_ahead(["a", "b"], ("-x",), info) == 0

    def failing(source, options, compute_capability):
        raise DeviceError("NVRTC failed: boom")

    monkeypatch.setattr(program_cache, "compile_cubin", failing)
    with pytest.raises(DeviceError, match="boom"):
        program_cache.compile_ahead(["c"], ("-x",), info)
