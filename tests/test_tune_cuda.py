"""edgeinfer tune on CUDA: the table lookup order of the CUDA backend, the tuner's per-API target and measurement
path (through the stand-in CuPy of test_cuda_backend: kernels recorded, never run), the command line; and, on a
machine with a usable CUDA device, a real tuning run whose table a new Session picks up."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cuda_backend import fake_cuda, needs_gpu, usable_cuda_device  # noqa: F401 - fake_cuda is a fixture

from conftest import conv_pack
from edgeinfer import tuned_configs
from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.cuda import runtime
from edgeinfer.errors import DeviceError
from edgeinfer.pack import read_pack

H200_OPENCL = "nvidia-cuda-nvidia-corporation-nvidia-h200"
H100_OPENCL = "nvidia-cuda-nvidia-corporation-nvidia-h100-80gb-hbm3"
H200 = DeviceInfo("cuda", "cuda:0", "NVIDIA H200", "gpu", "nvidia-h200-sm90", runtime.FAMILY, "simt",
                  details={"ordinal": 0, "max_work_group_size": 1024, "compute_capability": "90",
                           "driver_version": 13000, "nvrtc_version": "13.0"})  # fmt: skip
SMALL, LARGE, OTHER = {"K": 16, "M": 32, "N": 64}, {"K": 64, "M": 128, "N": 4096}, {"K": 16, "M": 32, "N": 128}


# ------------------------------------------------------------------ the table lookup order


@pytest.fixture
def tables(tmp_path, monkeypatch):
    """Private shipped and user table directories; ``write(backend, key, template, workload, TM, user=False)``."""
    monkeypatch.setattr(tuned_configs, "data_dir", lambda name: tmp_path / "shipped")
    monkeypatch.setenv("EDGEINFER_TUNED_DIR", str(tmp_path / "user"))
    monkeypatch.delenv("EDGEINFER_TUNED_CONFIGS", raising=False)
    tuned_configs._shipped_table.cache_clear()

    def write(backend: str, key: str, template: str, workload: dict, tm: int, user: bool = False) -> None:
        path = tmp_path / ("user" if user else "shipped") / backend / f"{key}.json"
        table = tuned_configs.read_table(path, backend, key)
        table.family, table.isa = runtime.FAMILY, "simt"
        table.add(template, workload, {"TM": tm})
        tuned_configs.write_table(table, path)
        tuned_configs._shipped_table.cache_clear()

    yield write
    tuned_configs._shipped_table.cache_clear()


def lookup(template: str, workload: dict, device: DeviceInfo = H200) -> tuple[dict, str]:
    return runtime.config_table(device).lookup(template, workload, lambda: {"TM": 0})


def test_cuda_table_first_then_the_same_gpus_opencl_table_per_workload(tables):
    tables("opencl", H200_OPENCL, "gemm", SMALL, 4)
    tables("opencl", H200_OPENCL, "gemm", LARGE, 8)
    tables("cuda", H200.device_key, "gemm", SMALL, 16)
    assert lookup("gemm", SMALL) == ({"TM": 16}, "tuned")
    # an exact OpenCL entry beats the nearest CUDA one: a CUDA table of a few workloads keeps the rest as tuned
    assert lookup("gemm", LARGE) == ({"TM": 8}, f"tuned via {H200_OPENCL} (the device's OpenCL table)")
    assert lookup("gemm", OTHER) == ({"TM": 16}, "nearest (K=16,M=32,N=64)")
    tables("cuda", H200.device_key, "gemm", SMALL, 32, user=True)
    tables("cuda", H200.device_key, "gemm", LARGE, 64, user=True)
    assert lookup("gemm", SMALL) == ({"TM": 32}, "tuned (user table)")
    assert lookup("gemm", LARGE) == ({"TM": 64}, "tuned (user table)")


def test_templates_neither_table_has_come_from_the_family(tables):
    tables("opencl", H200_OPENCL, "gemm", SMALL, 4)
    tables("opencl", H100_OPENCL, "depthwise", {"C": 32}, 2)
    assert lookup("depthwise", {"C": 32}) == ({"TM": 2}, f"tuned via {H100_OPENCL}")
    tables("cuda", "nvidia-h100-80gb-hbm3-sm90", "depthwise", {"C": 32}, 3)  # another GPU's CUDA table first
    assert lookup("depthwise", {"C": 32}) == ({"TM": 3}, "tuned via nvidia-h100-80gb-hbm3-sm90")
    assert lookup("conv2d", {"C": 8}) == ({"TM": 0}, "default")


def test_a_gpu_without_tables_borrows_the_familys_opencl_table(tables):
    tables("opencl", H200_OPENCL, "gemm", SMALL, 4)
    rtx = DeviceInfo("cuda", "cuda:1", "NVIDIA GeForce RTX 4090", "gpu", "nvidia-geforce-rtx-4090-sm89",
                     runtime.FAMILY, "simt")  # fmt: skip
    assert lookup("gemm", SMALL, rtx) == ({"TM": 4}, f"tuned via {H200_OPENCL}")


def test_tables_off_means_defaults_on_cuda(tables, monkeypatch):
    tables("opencl", H200_OPENCL, "gemm", SMALL, 4)
    tables("cuda", H200.device_key, "gemm", SMALL, 16)
    monkeypatch.setenv("EDGEINFER_TUNED_CONFIGS", "off")
    assert lookup("gemm", SMALL) == ({"TM": 0}, "default")


def test_lent_entries_are_never_written_as_the_cuda_tables_own(tables, tmp_path):
    tables("opencl", H200_OPENCL, "gemm", LARGE, 8)
    tables("cuda", H200.device_key, "gemm", SMALL, 16)
    merged = runtime.config_table(H200)
    tuned_configs.write_table(merged, tmp_path / "copy.json")
    assert [e["workload"] for e in json.loads((tmp_path / "copy.json").read_text())["entries"]] == [SMALL]


def test_devices_note_names_both_tables(tables):
    from edgeinfer.cli import tuned_table_note

    tables("opencl", H200_OPENCL, "gemm", LARGE, 8)
    assert tuned_table_note(H200) == f"tuned table: borrowed from {H200_OPENCL} (the device's OpenCL table)"
    tables("cuda", H200.device_key, "gemm", SMALL, 16)
    assert tuned_table_note(H200) == (
        f"tuned table: its own (1 workloads), the others from {H200_OPENCL} (the device's OpenCL table)"
    )


# ------------------------------------------------------------------ the tuner's CUDA path, on the stand-in CuPy


@pytest.fixture
def cuda_h200(fake_cuda, monkeypatch, tmp_path):  # noqa: F811 - the stand-in CuPy fixture
    """The stand-in CuPy with one listed device (H200), user tables in tmp_path; returns the conv pack."""
    monkeypatch.setattr(runtime, "_probe", lambda: (H200,))
    monkeypatch.setenv("EDGEINFER_TUNED_DIR", str(tmp_path / "tables"))
    conv_pack(tmp_path / "conv.pack")
    return tmp_path / "conv.pack"


def test_the_target_and_its_measure_path_follow_the_device_spec(cuda_h200, monkeypatch):
    from edgeinfer.tuning import targets

    cuda = targets.select_target("cuda:0")
    assert isinstance(cuda, targets.CudaTarget) and cuda.api == "cuda" and cuda.info is H200
    assert cuda.driver == "CUDA 13.0 driver, NVRTC 13.0"
    chosen = []
    monkeypatch.setattr(targets, "OpenCLTarget", lambda spec: chosen.append(spec) or "opencl target")
    assert targets.select_target("opencl:0:0") == "opencl target" and chosen == ["opencl:0:0"]
    assert targets.select_target("opencl") == "opencl target"


@pytest.fixture
def direct_gpu_convs(monkeypatch):
    """The 1x1 conv planned as a gemm (as before the implicit GEMM, planning/conv_gemm.py): these tests are about the
    tuner's CUDA path on a gemm task."""
    monkeypatch.setenv("EDGEINFER_GPU_CONV", "direct")


def gemm_task(pack):
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.workloads import collect_tasks

    target = select_target("cuda:0")
    tasks = collect_tasks({"conv": read_pack(pack)}, target)
    assert [t.template for t in tasks] == ["gemm", "depthwise"]  # NCHW on GPUs, as the executor plans
    return target, tasks[0]


def test_measure_through_cuda_checks_and_times_with_cuda_events(cuda_h200, fake_cuda, direct_gpu_convs):  # noqa: F811
    from edgeinfer.tuning.measure import Measurer

    target, task = gemm_task(cuda_h200)
    measurer = Measurer(target, repeat=3)
    config = {"VEC": "N", "TM": 4, "TN": 4, "UNROLL_K": 4, "local": [16, 4, 1]}
    wrong = measurer.measure(task, config)  # the stand-in computes nothing: the check against NumPy catches it
    assert not wrong.valid and "NumPy reference" in wrong.error
    measurer._references[task.key] = {name: np.zeros_like(v) for name, v in measurer.reference(task).items()}
    fake_cuda.launched.clear()
    timed = measurer.measure(task, config)
    assert timed.valid and timed.ms == pytest.approx(0.001)  # one launch; the stand-in's event time is 0.001 ms
    assert {name for name, *_ in fake_cuda.launched} == {"gemm_vec_n"}


def test_bad_configs_on_cuda_are_invalid_not_crashes(cuda_h200, monkeypatch, direct_gpu_convs):
    from edgeinfer.backends.cuda import memory, program_cache
    from edgeinfer.tuning.measure import Measurer

    target, task = gemm_task(cuda_h200)
    measurer = Measurer(target, repeat=2)
    measurer._references[task.key] = {name: np.zeros_like(v) for name, v in measurer.reference(task).items()}
    good = {"VEC": "N", "TM": 4, "TN": 4, "UNROLL_K": 4, "local": [16, 4, 1]}
    big = measurer.measure(task, {**good, "local": [32, 16, 1]})  # 512 threads; the stand-in kernels allow 256
    assert not big.valid and "limit of 256 threads" in big.error

    def nvrtc_fails(sources, options, info):
        raise DeviceError("NVRTC failed: NVRTC_ERROR_COMPILATION (6)\nerror: identifier float5 is undefined")

    with monkeypatch.context() as patch:
        patch.setattr(program_cache, "compile_ahead", nvrtc_fails)
        failed = measurer.measure(task, good)
        assert not failed.valid and failed.error.startswith("DeviceError: NVRTC failed")
        target.compile_ahead(task.graph, task.template, [good])  # building ahead leaves failures to measure
    with monkeypatch.context() as patch:
        patch.setattr(memory, "GRID_YZ_LIMIT", 0)  # every launch has more blocks than CUDA allows
        gridless = measurer.measure(task, good)
        assert not gridless.valid and "blocks in grid" in gridless.error
    assert measurer.measure(task, good).valid


def test_cli_tunes_cuda_and_session_takes_the_user_table(cuda_h200, monkeypatch, tmp_path, capsys):
    from edgeinfer import Session
    from edgeinfer.cli import main
    from edgeinfer.tuning.measure import Measurer

    monkeypatch.setattr(Measurer, "_check", lambda self, task, outputs: "")  # the stand-in computes nothing
    args = ["tune", str(cuda_h200), "--device", "cuda:0", "--trials", "3", "--repeat", "2"]
    assert main(args) == 0
    assert "2 of 2 workloads tuned" in capsys.readouterr().out
    path = tmp_path / "tables" / "cuda" / "nvidia-h200-sm90.json"
    table = json.loads(path.read_text())
    assert (table["backend"], table["device_key"], table["family"], table["isa"]) == (
        "cuda", "nvidia-h200-sm90", runtime.FAMILY, "simt")  # fmt: skip
    for entry in table["entries"]:
        assert entry["driver"] == "CUDA 13.0 driver, NVRTC 13.0" and entry["device_key"] == "nvidia-h200-sm90"
        assert {"time_ms", "trials", "date", "edgeinfer_version"} <= set(entry)
    records = path.with_name("nvidia-h200-sm90.records.jsonl").read_text().splitlines()
    assert len(records) >= 4 and all(json.loads(line)["device_key"] == "nvidia-h200-sm90" for line in records)
    session = Session(cuda_h200, device="cuda:0")
    assert session.backend == "cuda"
    assert [row["config_source"] for row in session.explain()] == ["tuned (user table)"] * 2
    assert main(["tune", str(cuda_h200), "--device", "cuda:0", "--report"]) == 0
    report = capsys.readouterr().out
    assert "device nvidia-h200-sm90: 2 tunable workloads" in report and "exact        2" in report


def test_the_opencl_config_cuda_runs_today_competes(cuda_h200, monkeypatch, direct_gpu_convs):
    """A CUDA entry must not be slower than the same GPU's OpenCL config it replaces: that config is measured first."""
    from edgeinfer.tuning import TuneOptions, targets, tune
    from edgeinfer.tuning.measure import Measurer
    from edgeinfer.tuning.records import RecordLog

    _, task = gemm_task(cuda_h200)
    opencl_config = {"VEC": "N", "TM": 2, "TN": 4, "UNROLL_K": 2, "local": [8, 8, 1]}
    lender = tuned_configs.ConfigTable("opencl", H200_OPENCL)
    lender.add("gemm", task.workload, opencl_config)
    lent = tuned_configs.with_lent_entries(tuned_configs.ConfigTable("cuda", H200.device_key), lender, H200_OPENCL)
    monkeypatch.setattr(targets.CudaTarget, "config_table", lambda self: lent)
    monkeypatch.setattr(Measurer, "_check", lambda self, task, outputs: "")  # the stand-in computes nothing
    options = TuneOptions("cuda:0", trials=2, repeat=2, templates={"gemm"}, progress=False)
    result = tune([cuda_h200], options, log=lambda s: None)
    measured = [r.config for r in RecordLog(result.records_path).records]
    assert opencl_config in measured[:2], measured  # with the heuristic default, before any candidate


def test_a_rerun_searches_configs_earlier_runs_never_tried_costliest_workload_first(cuda_h200, monkeypatch, tmp_path):
    """Session 10's log held 8 records 'planner replaced it: tuned via <the OpenCL table>' for each 1x1 conv of the
    shared models (the GPU then planned them through gemm, the conv2d override unused), and a rerun counted them as
    its 8 trials: it measured nothing and left those workloads untuned. Such records, and those of configs today's
    knob space does not have, are no trials: the rerun searches the workload."""
    from edgeinfer.tuning import TuneOptions, tune
    from edgeinfer.tuning.measure import Measurer
    from edgeinfer.tuning.records import Record, RecordLog
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.tuner import default_config, knob_candidates
    from edgeinfer.tuning.workloads import collect_tasks

    monkeypatch.setattr(Measurer, "_check", lambda self, task, outputs: "")  # the stand-in computes nothing
    target = select_target("cuda:0")
    conv = next(t for t in collect_tasks({"conv": read_pack(cuda_h200)}, target) if t.template == "conv2d")
    ctx = target.plan_context(conv.graph, tuned_configs.ConfigTable("cuda", H200.device_key))
    set_aside = [default_config(conv, ctx), *knob_candidates(conv, ctx)[:5]]
    log = RecordLog(tmp_path / "log.jsonl")
    for config in set_aside:
        log.append(Record("conv2d", conv.workload, config, None, H200.device_key,
                          f"planner replaced it: tuned via {H200_OPENCL} (the device's OpenCL table)"))  # fmt: skip
    dropped = {"TM": 1, "TN": 4, "local": [1, 1, 1]}  # plans, but is no longer in the knob space
    log.append(Record("conv2d", conv.workload, dropped, 1e-6, H200.device_key))
    earlier = len(log.records)
    options = TuneOptions("cuda:0", trials=earlier, repeat=2, out=tmp_path / "table.json", records=log.path,
                          progress=False)  # fmt: skip
    result = tune([cuda_h200], options, log=lambda s: None)
    # the costliest first: depthwise 2 * 2304 * 9 + 2304 (bias) FLOPs, then the 1x1 conv's 2 * 2304 * 8 + 2304
    assert [(d.task.template, d.task.flops) for d in result.results] == [("depthwise", 43776), ("conv2d", 39168)]
    measured = [r.config for r in RecordLog(log.path).records[earlier:] if r.template == "conv2d"]
    assert len(measured) >= options.trials and set_aside[0] in measured
    done = result.results[1]
    assert done.best_config is not None and done.best_config != dropped, done


def test_a_node_planned_through_another_template_is_a_config_set_aside_untried(cuda_h200, monkeypatch):
    """The planner disagreeing with the task (here: the 1x1 conv extracted as conv2d, then planned as a gemm) leaves
    the override unused: the record says so, and a rerun does not count it as a trial (measure.untried)."""
    from edgeinfer.tuning.measure import Measurer, untried
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.tuner import default_config
    from edgeinfer.tuning.workloads import collect_tasks

    target = select_target("cuda:0")
    conv = next(t for t in collect_tasks({"conv": read_pack(cuda_h200)}, target) if t.template == "conv2d")
    config = default_config(conv, target.plan_context(conv.graph, tuned_configs.ConfigTable("cuda", "none")))
    monkeypatch.setenv("EDGEINFER_GPU_CONV", "direct")
    result = Measurer(target, repeat=1).measure(conv, config)
    assert result.error.startswith("planner replaced it: planned as gemm, not conv2d") and untried(result.error)


# ------------------------------------------------------------------ on a CUDA device


@needs_gpu
def test_tune_on_the_gpu_finds_a_checked_config_that_session_then_uses(tmp_path, monkeypatch):
    from edgeinfer import Session
    from edgeinfer.tuning import TuneOptions, tune

    monkeypatch.setenv("EDGEINFER_TUNED_DIR", str(tmp_path / "tables"))
    conv_pack(tmp_path / "conv.pack")
    device = usable_cuda_device()
    result = tune([tmp_path / "conv.pack"], TuneOptions(device.spec, trials=4, repeat=3, progress=False),
                  log=lambda s: None)  # fmt: skip
    assert not result.stopped and len(result.results) == 2
    for done in result.results:
        assert done.best_config is not None and done.best_ms > 0 and done.trials >= 2, done
    assert result.table_path == tmp_path / "tables" / "cuda" / f"{device.device_key}.json"
    table = json.loads(result.table_path.read_text())
    assert table["backend"] == "cuda" and len(table["entries"]) == 2
    session = Session(tmp_path / "conv.pack", device=device.spec)
    assert [row["config_source"] for row in session.explain()] == ["tuned (user table)"] * 2
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32)
    reference = Session(tmp_path / "conv.pack", device="cpu:numpy").run({"x": x})["y"]
    np.testing.assert_allclose(session.run({"x": x})["y"], reference, rtol=1e-4, atol=1e-4)


@needs_gpu
def test_bad_configs_on_the_gpu_are_invalid_not_crashes(tmp_path, direct_gpu_convs):
    from edgeinfer.tuning.measure import Measurer
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.workloads import collect_tasks

    conv_pack(tmp_path / "conv.pack")
    target = select_target(usable_cuda_device().spec)
    task = next(t for t in collect_tasks({"conv": read_pack(tmp_path / "conv.pack")}, target) if t.template == "gemm")
    measurer = Measurer(target, repeat=2)
    good = {"VEC": "N", "TM": 4, "TN": 4, "UNROLL_K": 4, "local": [16, 4, 1]}
    timed = measurer.measure(task, good)
    assert timed.valid and timed.ms > 0, timed
    no_such_vector = measurer.measure(task, {"VEC": "N", "TM": 3, "TN": 5, "UNROLL_K": 4})
    assert not no_such_vector.valid and no_such_vector.error, no_such_vector
    too_big = measurer.measure(task, {**good, "local": [64, 32, 1]})  # 2048 threads: CUDA allows 1024
    assert not too_big.valid and too_big.error, too_big
    measurer._references[task.key] = {name: v + 1 for name, v in measurer.reference(task).items()}
    wrong = measurer.measure(task, good)
    assert not wrong.valid and "NumPy reference" in wrong.error
