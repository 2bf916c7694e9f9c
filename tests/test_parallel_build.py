"""A cold load on PoCL compiles in helper processes too (edgeinfer/backends/opencl/parallel_build.py, issue 17)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import conv_pack, usable_opencl_device

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (install pocl-opencl-icd)")
FEEDS = {"x": np.linspace(-1, 1, 8 * 12 * 12, dtype=np.float32).reshape(1, 8, 12, 12)}


@pytest.fixture
def cold(tmp_path, monkeypatch):
    """An empty program cache of ours (PoCL's own may hold the builds: helpers then finish sooner) and a pack."""
    from edgeinfer.backends.opencl import program_cache, select_device

    if not program_cache.driver_keeps_builds(select_device(DEVICE.spec).device):
        pytest.skip("only PoCL compiles a cold load in helper processes")
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(program_cache, "_memo", {})
    pack = tmp_path / "conv.pack"
    conv_pack(pack)
    return pack


def planned_items(pack):
    from edgeinfer.backends.opencl import parallel_build, select_device
    from edgeinfer.backends.opencl.plans import device_graph, plan_context
    from edgeinfer.pack import read_pack
    from edgeinfer.planning.plan import Launch
    from edgeinfer.planning.registry import plan_graph

    device = select_device(DEVICE.spec)
    graph = device_graph(read_pack(pack), device)
    records = plan_graph(graph, plan_context(graph, device))
    launches = [launch for r in records for launch in (r.plan.launches if r.plan else []) if isinstance(launch, Launch)]
    return parallel_build.uncached_items(launches, graph, device), device


def test_processes_setting(monkeypatch):
    from edgeinfer.backends.opencl import parallel_build

    monkeypatch.setenv(parallel_build.PROCESSES_ENV, "3")
    assert parallel_build.processes() == 3
    monkeypatch.delenv(parallel_build.PROCESSES_ENV)
    assert 1 <= parallel_build.processes() <= parallel_build.MAX_PROCESSES
    for bad in ("0", "two"):
        monkeypatch.setenv(parallel_build.PROCESSES_ENV, bad)
        with pytest.raises(ValueError, match=parallel_build.PROCESSES_ENV):
            parallel_build.processes()


def test_a_helper_builds_every_unclaimed_launch_and_a_load_then_compiles_none(cold, tmp_path, monkeypatch):
    from edgeinfer.backends.opencl import parallel_build, program_cache
    from edgeinfer.session import Session

    items, device = planned_items(cold)
    assert len(items) >= 2
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / items[0].claim).touch()  # another process took the first one
    workfile = tmp_path / "work.pickle"
    workfile.write_bytes(pickle.dumps({"device": device.info.spec, "items": items}))
    helper = [sys.executable, "-m", "edgeinfer.backends.opencl.parallel_build", str(workfile), str(tmp_path / "n")]
    result = subprocess.run(helper, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "n").read_text() == str(len(items) - 1)
    keys = [program_cache.cache_key(i.source, i.options, device.device, device.info.device_key) for i in items]
    cached = [program_cache.is_cached(key, device.device) for key in keys]
    assert cached == [False] + [True] * (len(items) - 1)

    compiled = program_cache.STATS["compiled"]
    monkeypatch.setenv(parallel_build.PROCESSES_ENV, "1")
    reference = Session(cold, device="cpu").run(FEEDS)["y"]
    assert np.allclose(Session(cold, device=DEVICE.spec).run(FEEDS)["y"], reference, rtol=1e-4, atol=1e-4)
    assert program_cache.STATS["compiled"] - compiled == 1  # only the claimed one was left to build


def test_a_cold_load_with_helpers_computes_what_one_process_computes(cold, monkeypatch):
    from edgeinfer.backends.opencl import parallel_build, program_cache
    from edgeinfer.session import Session

    items, _ = planned_items(cold)
    monkeypatch.setenv(parallel_build.PROCESSES_ENV, "2")
    started = []
    start_helper = parallel_build._start_helper
    monkeypatch.setattr(parallel_build, "_start_helper", lambda *a: started.append(a) or start_helper(*a))
    compiled = program_cache.STATS["compiled"]
    session = Session(cold, device=DEVICE.spec)
    assert len(started) == 1
    assert program_cache.STATS["compiled"] - compiled == len(items)  # the helper's share counted here
    reference = Session(cold, device="cpu").run(FEEDS)["y"]
    assert np.allclose(session.run(FEEDS)["y"], reference, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(program_cache, "_memo", {})
    again = program_cache.STATS["compiled"]
    Session(cold, device=DEVICE.spec)  # warm: no helper, nothing compiled
    assert len(started) == 1 and program_cache.STATS["compiled"] == again
