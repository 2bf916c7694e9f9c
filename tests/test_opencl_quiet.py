"""A first load prints nothing from the OpenCL compiler (issue 17): PoCL's clang writes "N warnings generated."
onto file descriptor 2, which program_cache points elsewhere while it builds."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import tiny_graph, usable_opencl_device

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (install pocl-opencl-icd)")

NOISE = b"27 warnings generated.\n"


def test_builds_keep_descriptor_2_quiet_and_keep_the_log(capfd, monkeypatch):
    from edgeinfer.backends.opencl.program_cache import captured_compiler_output

    monkeypatch.delenv("EDGEINFER_VERBOSE", raising=False)
    with captured_compiler_output() as log:
        os.write(2, NOISE)
    assert capfd.readouterr().err == ""
    assert log == [NOISE.decode()]
    os.write(2, b"after\n")  # descriptor 2 is back where it was
    assert capfd.readouterr().err == "after\n"


def test_verbose_shows_the_compiler_output(capfd, monkeypatch):
    from edgeinfer.backends.opencl.program_cache import captured_compiler_output

    monkeypatch.setenv("EDGEINFER_VERBOSE", "1")
    with captured_compiler_output():
        os.write(2, NOISE)
    assert capfd.readouterr().err == NOISE.decode()


def test_a_first_load_prints_nothing(capfd, monkeypatch, tmp_path):
    """Every program of a first load is compiled (empty caches) by a compiler that talks; nothing reaches the
    terminal."""
    import pyopencl as cl

    import edgeinfer
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.pack import write_pack

    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEINFER_VERBOSE", raising=False)
    monkeypatch.setattr(program_cache, "_memo", {})
    build = cl.Program.build

    def talkative_build(self, *args, **kwargs):
        os.write(2, NOISE)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(cl.Program, "build", talkative_build)
    pack = tmp_path / "tiny.pack"
    write_pack(tiny_graph(), pack)
    compiled = program_cache.STATS["compiled"]
    session = edgeinfer.Session(pack, device=DEVICE.spec)
    session.run({"x": np.ones((1, 3, 4, 4), np.float32)})
    assert program_cache.STATS["compiled"] > compiled  # it did build, and the compiler did talk
    assert capfd.readouterr().err == ""


def test_a_load_that_compiles_says_so_in_one_line(capfd, monkeypatch, tmp_path):
    """EDGEINFER_PROGRESS=1 (a terminal gets it by default): one line says what was compiled, why, and where
    it is cached; a second load, served from the cache, says nothing."""
    import edgeinfer
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.pack import write_pack

    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEINFER_PROGRESS", "1")
    monkeypatch.setattr(program_cache, "_memo", {})
    pack = tmp_path / "tiny.pack"
    write_pack(tiny_graph(), pack)
    edgeinfer.Session(pack, device=DEVICE.spec)
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "compiled" in lines[0] and "first run on this device" in lines[0], lines
    assert str(tmp_path / "cache") in lines[0]
    monkeypatch.setattr(program_cache, "_memo", {})  # a new process: from the disk cache
    edgeinfer.Session(pack, device=DEVICE.spec)
    assert capfd.readouterr().err == ""


def test_a_load_that_compiles_on_pocl_enqueues_every_kernel_under_the_status_line(monkeypatch, tmp_path):
    """PoCL compiles each kernel for its work-group size at its first enqueue: a load that built programs runs the
    graph once on zeros, kernel by kernel under the status line, so that the user's first run compiles nothing
    unannounced; a load served from the cache does not."""
    import edgeinfer
    from edgeinfer.backends.opencl import program_cache, select_device
    from edgeinfer.pack import write_pack

    if not program_cache.driver_keeps_builds(select_device(DEVICE.spec).device):
        pytest.skip("only PoCL compiles kernels at their first enqueue")
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(program_cache, "_memo", {})
    updates: list[tuple[int, int]] = []
    monkeypatch.setattr(program_cache.PROGRESS, "first_enqueue", lambda done, total: updates.append((done, total)))
    pack = tmp_path / "tiny.pack"
    write_pack(tiny_graph(), pack)
    executable = edgeinfer.Session(pack, device=DEVICE.spec)._executable
    kernels = sum(step.kind == "kernel" for step in executable.steps)
    assert kernels > 0 and updates == [(i, kernels) for i in range(1, kernels + 1)]
    assert executable.warm_up_error is None
    updates.clear()
    monkeypatch.setattr(program_cache, "_memo", {})  # a new process: from the cache, nothing to announce
    edgeinfer.Session(pack, device=DEVICE.spec)
    assert updates == []
