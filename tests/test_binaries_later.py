"""PoCL binaries later (issue 17): a load that left markers only starts a niced, detached child that stores binaries
of ours, after which a warm load builds nothing from source (background_build.store_binaries_later)."""

from __future__ import annotations

import fcntl
import subprocess
import sys

import pytest

from conftest import conv_pack, usable_opencl_device

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (install pocl-opencl-icd)")


@pytest.fixture
def pocl_cache(tmp_path, monkeypatch):
    """An empty program cache on PoCL, binaries stored later (the default, which conftest turns off)."""
    from edgeinfer.backends.opencl import program_cache, select_device

    if not program_cache.driver_keeps_builds(select_device(DEVICE.spec).device):
        pytest.skip("only PoCL keeps its builds itself (elsewhere a load stores binaries at once)")
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(program_cache.POCL_BINARIES_ENV, raising=False)
    monkeypatch.setattr(program_cache, "_memo", {})
    return tmp_path / "cache" / "opencl"


def wait_for_children(directory, timeout: float = 300) -> None:
    """Until no child holds a storing-binaries lock in ``directory``."""
    import time

    for path in directory.glob("storing-binaries-*.lock"):
        with open(path) as lock:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"the child holding {path} did not finish"
                    time.sleep(0.1)


def test_a_load_leaving_markers_stores_binaries_in_a_child_and_the_next_load_builds_nothing_from_source(
    pocl_cache, tmp_path, monkeypatch
):
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.session import Session

    pack = tmp_path / "conv.pack"
    conv_pack(pack)
    Session(pack, device=DEVICE.spec)
    markers = sorted(p.stem for p in pocl_cache.glob("*.built"))
    assert markers and list(pocl_cache.glob("storing-binaries-*.lock")), "no child was started"
    wait_for_children(pocl_cache)
    assert sorted(p.stem for p in pocl_cache.glob("*.bin")) == markers

    def from_source(*args, **kwargs):
        raise AssertionError("a warm load built a program from source although its binary is cached")

    monkeypatch.setattr(program_cache, "_memo", {})  # a new process
    monkeypatch.setattr(program_cache, "_compile", from_source)
    without_binary, from_disk = program_cache.STATS["without_binary"], program_cache.STATS["from_disk"]
    Session(pack, device=DEVICE.spec)
    assert program_cache.STATS["without_binary"] == without_binary
    assert program_cache.STATS["from_disk"] - from_disk == len(markers)


def test_one_child_at_a_time_per_pack_and_none_when_switched_off(pocl_cache, tmp_path, monkeypatch):
    from edgeinfer import background_build
    from edgeinfer.backends.opencl import program_cache

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(background_build, "store_binaries_command", lambda pack, device: sleeper)
    pack = tmp_path / "conv.pack"
    first = background_build.store_binaries_later(pack, DEVICE.spec)
    assert first is not None
    try:
        assert background_build.store_binaries_later(pack, DEVICE.spec) is None  # the first holds the lock
        other = background_build.store_binaries_later(tmp_path / "other.pack", DEVICE.spec)
        assert other is not None
        other.kill()
        other.wait()
    finally:
        first.kill()
        first.wait()
    again = background_build.store_binaries_later(pack, DEVICE.spec)  # the lock went with the child
    assert again is not None
    again.kill()
    again.wait()
    for setting in ("0", "1"):
        monkeypatch.setenv(program_cache.POCL_BINARIES_ENV, setting)
        assert background_build.store_binaries_later(pack, DEVICE.spec) is None


def test_the_child_runs_at_the_lowest_priority(tmp_path):
    """`prepare --low-priority` lowers its own priority before it plans or builds anything."""
    pack = tmp_path / "conv.pack"
    conv_pack(pack)
    code = ("import os, sys, types; from edgeinfer import cli; from edgeinfer.backends.opencl import ahead; "
            "ahead.program_status = lambda graph, device: types.SimpleNamespace(cached=os.nice(0), needed=0, "
            "device_key='k', cache_dir='d'); "
            "sys.exit(cli.main(['prepare', sys.argv[1], '--check', '--low-priority']))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, str(pack)], capture_output=True, text=True)
    assert result.returncode == 0 and "19 of 0 programs cached" in result.stdout, result.stderr
