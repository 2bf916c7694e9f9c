"""Building ahead (issue 17): `edgeinfer prepare` fills the program cache; `--check` says what it holds, found by
planning the pack exactly as the executor builds it."""

from __future__ import annotations

import pytest

from conftest import conv_pack, usable_opencl_device

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (install pocl-opencl-icd)")


def test_prepare_fills_the_cache_and_check_counts_it(tmp_path, monkeypatch, capsys):
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.cli import main

    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(program_cache, "_memo", {})
    pack = tmp_path / "conv.pack"
    conv_pack(pack)
    assert main(["prepare", str(pack), "--device", DEVICE.spec, "--check"]) == 0
    before = capsys.readouterr().out
    compiled = program_cache.STATS["compiled"]
    assert main(["prepare", str(pack), "--device", DEVICE.spec]) == 0
    built = program_cache.STATS["compiled"] - compiled
    after = capsys.readouterr().out
    assert built > 0 and f"0 of {built} programs cached" in before, before
    assert f"built {built} programs" in after and f"{built} of {built} programs cached" in after, after


def test_every_program_check_counts_is_one_a_load_builds(monkeypatch):
    """A key that no load builds would make a warm "auto" load look cold for ever (background_build). SqueezeNet's
    zero-copy Concats drop launches that planning alone would count (it did: 17 keys, one never built)."""
    pytest.importorskip("onnx")
    from conftest import shared_model
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.backends.opencl.ahead import needed_programs
    from edgeinfer.compiler import compile_model

    graph = compile_model(shared_model("squeezenet1.1.onnx"))
    built = set()
    build_program = program_cache.build_program

    def recording(context, device, device_key, source, options, label=""):
        built.add(program_cache.cache_key(source, options, device, device_key))
        return build_program(context, device, device_key, source, options, label)

    monkeypatch.setattr(program_cache, "build_program", recording)
    keys, _ = needed_programs(graph, DEVICE.spec)
    opencl.prepare(graph, DEVICE.spec)
    assert keys and not keys - built, f"{len(keys - built)} of {len(keys)} counted programs are never built"


def test_prepare_stores_binaries_on_pocl_where_a_load_stores_markers(tmp_path, monkeypatch, capsys):
    """On PoCL a load leaves markers (PoCL's own cache holds the build); building ahead stores binaries, which a later
    load reads without building from source."""
    from edgeinfer.backends.opencl import program_cache, select_device
    from edgeinfer.cli import main
    from edgeinfer.session import Session

    if not program_cache.driver_keeps_builds(select_device(DEVICE.spec).device):
        pytest.skip("only PoCL keeps its builds itself")
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(program_cache.POCL_BINARIES_ENV, raising=False)
    monkeypatch.setattr(program_cache, "_memo", {})
    pack = tmp_path / "conv.pack"
    conv_pack(pack)
    Session(pack, device=DEVICE.spec)
    directory = tmp_path / "cache" / "opencl"
    markers = sorted(p.stem for p in directory.glob("*.built"))
    assert markers and not list(directory.glob("*.bin"))
    monkeypatch.setattr(program_cache, "_memo", {})
    assert main(["prepare", str(pack), "--device", DEVICE.spec]) == 0
    assert sorted(p.stem for p in directory.glob("*.bin")) == markers
    monkeypatch.setattr(program_cache, "_memo", {})  # a new process
    compiled, from_disk = program_cache.STATS["compiled"], program_cache.STATS["from_disk"]
    Session(pack, device=DEVICE.spec)
    assert program_cache.STATS["compiled"] == compiled
    assert program_cache.STATS["from_disk"] - from_disk == len(markers)
    capsys.readouterr()
