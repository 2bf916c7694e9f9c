"""A first "auto" load that would compile answers from NumPy while the OpenCL programs build in a child process, then
switches to OpenCL at a run boundary (edgeinfer/background_build.py, issue 17)."""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
import pytest

from conftest import tiny_graph, usable_opencl_device

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (install pocl-opencl-icd)")
FEEDS = {"x": np.linspace(-2, 2, 48, dtype=np.float32).reshape(1, 3, 4, 4)}


@pytest.fixture
def pack(monkeypatch, tmp_path):
    """A tiny pack, an empty program cache, and "auto" choosing an OpenCL device."""
    from edgeinfer.backends import resolve_device
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.pack import write_pack

    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("EDGEINFER_DEVICE", "EDGEINFER_BACKGROUND_BUILD", "EDGEINFER_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(program_cache, "_memo", {})
    if resolve_device("auto")[0].NAME != "opencl":
        pytest.skip("device 'auto' does not resolve to OpenCL here")
    path = tmp_path / "tiny.pack"
    write_pack(tiny_graph(), path)
    return path


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_auto_answers_from_numpy_then_switches_to_opencl_and_a_second_load_starts_there(pack):
    import edgeinfer
    from edgeinfer.backends.opencl import OpenCLExecutable

    session = edgeinfer.Session(pack)
    assert session.backend == "cpu" and "while OpenCL builds" in session.backend_status
    first = session.run(FEEDS)["y"]
    assert session.wait_until_ready(timeout=300), session.backend_status
    assert session.backend == "opencl" and session.backend_status == "opencl"
    assert isinstance(session._executable, OpenCLExecutable)
    second = session.run(FEEDS)["y"]
    assert rel_l2(second, first) < 1e-4
    again = edgeinfer.Session(pack)  # the cache is full now: straight to OpenCL, no background build
    assert again.backend == "opencl" and again._background is None
    assert rel_l2(again.run(FEEDS)["y"], first) < 1e-4


def test_a_warm_auto_load_plans_once_and_a_cold_one_builds_nothing_in_the_foreground(pack, monkeypatch):
    """Warm: loaded with program_cache.cached_only, without ahead.needed_programs planning the pack a second time.
    Cold: the cached-only try stops at the first uncached program instead of compiling it."""
    import edgeinfer
    from edgeinfer.backends.opencl import ahead, program_cache

    compiled = program_cache.STATS["compiled"]
    session = edgeinfer.Session(pack)
    assert session._background is not None and program_cache.STATS["compiled"] == compiled
    assert session.wait_until_ready(timeout=300) and session.backend == "opencl", session.backend_status

    def planning_again(*args, **kwargs):
        raise AssertionError("a warm auto load planned the pack to test the cache")

    monkeypatch.setattr(ahead, "needed_programs", planning_again)
    monkeypatch.setattr(program_cache, "_memo", {})  # a new process
    again = edgeinfer.Session(pack)
    assert again.backend == "opencl" and again._background is None


def test_an_explicit_device_loads_there_blocking(pack, monkeypatch):
    import edgeinfer
    from edgeinfer import background_build

    def no_background(*args, **kwargs):
        raise AssertionError("an explicit device must not build in the background")

    monkeypatch.setattr(background_build, "BackgroundBuild", no_background)
    session = edgeinfer.Session(pack, device=DEVICE.spec)
    assert session.backend == "opencl" and session.backend_status == "opencl" and session.wait_until_ready(0)


def test_the_environment_switch_turns_it_off_for_auto(pack, monkeypatch):
    import edgeinfer

    monkeypatch.setenv("EDGEINFER_BACKGROUND_BUILD", "0")
    session = edgeinfer.Session(pack)
    assert session.backend == "opencl" and session._background is None


def test_closing_or_dropping_a_session_mid_build_stops_the_child(pack):
    import edgeinfer

    session = edgeinfer.Session(pack)
    build = session._background
    session.close()
    assert build.wait(timeout=30) and build.prepared is None
    assert build._child.poll() is not None
    session = edgeinfer.Session(pack)
    build = session._background
    assert build is not None
    del session
    gc.collect()
    assert build.wait(timeout=30) and build._child.poll() is not None


@pytest.mark.parametrize("where", ["child", "load"])
def test_a_failed_build_keeps_serving_from_numpy_and_says_why(pack, monkeypatch, where):
    import edgeinfer
    from edgeinfer import background_build
    from edgeinfer.backends import opencl

    if where == "child":
        failing = [sys.executable, "-c", "import sys; print('compiler exploded', file=sys.stderr); sys.exit(3)"]
        monkeypatch.setattr(background_build, "prepare_command", lambda pack, device: failing)
    else:
        prepare = opencl.prepare

        def failing_prepare(*args, **kwargs):
            if threading.current_thread() is threading.main_thread():  # the Session's cached-only try: it misses
                return prepare(*args, **kwargs)
            raise RuntimeError("compiler exploded")

        monkeypatch.setattr(opencl, "prepare", failing_prepare)
    session = edgeinfer.Session(pack)
    first = session.run(FEEDS)["y"]
    assert session.wait_until_ready(timeout=300)
    status = session.backend_status
    assert session.backend == "cpu" and "failed" in status and "compiler exploded" in status, status
    assert rel_l2(session.run(FEEDS)["y"], first) == 0.0


def test_cli_run_answers_and_leaves_the_build_running_or_waits_for_it(pack, tmp_path, capsys, monkeypatch):
    from edgeinfer import background_build
    from edgeinfer.backends import resolve_device
    from edgeinfer.backends.opencl.ahead import program_status
    from edgeinfer.cli import main
    from edgeinfer.pack import read_pack

    npy = tmp_path / "x.npy"
    np.save(npy, FEEDS["x"])
    children = []
    command = background_build.prepare_command
    monkeypatch.setattr(background_build, "prepare_command", lambda *a: children.append(1) or command(*a))
    monkeypatch.setenv("EDGEINFER_PROGRESS", "1")
    assert main(["run", str(pack), str(npy)]) == 0
    out, err = capsys.readouterr()
    assert "first values" in out and "goes on in the background" in err and "finishing" not in err
    gc.collect()  # the Session is gone; its build was detached, so it goes on and fills the cache
    deadline = time.monotonic() + 300
    while (status := program_status(read_pack(pack), resolve_device("auto")[1])).cached < status.needed:
        assert time.monotonic() < deadline, "the detached build did not fill the cache"
        time.sleep(0.2)
    assert status.cached == status.needed > 0
    # --wait on a cold cache: answers, then says it waits, and returns with the build done
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache2"))
    assert main(["run", str(pack), str(npy), "--wait"]) == 0
    out, err = capsys.readouterr()
    assert "first values" in out and err.count("finishing the OpenCL build") == 1
    status = program_status(read_pack(pack), resolve_device("auto")[1])
    assert status.cached == status.needed > 0 and len(children) == 2


def test_a_load_while_another_process_builds_the_pack_waits_for_that_build_instead_of_starting_one(pack):
    """A second `edgeinfer run` during the first one's detached build: no second compile of everything."""
    import os

    import edgeinfer
    from edgeinfer import background_build
    from edgeinfer.backends import resolve_device
    from edgeinfer.backends.opencl import program_cache

    device = resolve_device("auto")[1]
    lock_path = program_cache.cache_dir() / f"building-{background_build._pack_device_hash(pack, device)}.lock"
    held = background_build._try_lock(lock_path)  # this test stands for the other process's build
    assert held is not None
    try:
        session = edgeinfer.Session(pack)
        build = session._background
        assert build is not None and build.waits_for_another
        assert build._child.args == background_build.wait_for_lock_command(lock_path)
        time.sleep(1.0)
        assert build._child.poll() is None and not build.done()  # waiting while the other build holds the lock
        first = session.run(FEEDS)["y"]
    finally:
        os.close(held)  # the other build ends
    assert session.wait_until_ready(timeout=300), session.backend_status
    assert session.backend == "opencl"
    assert rel_l2(session.run(FEEDS)["y"], first) < 1e-4
