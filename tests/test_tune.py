"""edgeinfer tune: the search, the cost model, measurement checks, records/resume, and a real tuning run on the
first OpenCL device (PoCL in CI) with a tiny budget."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import conv_pack, usable_opencl_device
from edgeinfer.tuning.cost_model import CostModel, Sample, workload_ranks
from edgeinfer.tuning.measure import Measurement
from edgeinfer.tuning.records import Record, RecordLog, config_key
from edgeinfer.tuning.search import SearchState, StopSearch, search

# ------------------------------------------------------------------ device-free: search and cost model


def landscape(config: dict) -> float:
    """A synthetic latency surface over (TM, TN, local): smooth, with one optimum at TM=8, TN=16, local 2."""
    tm, tn, lo = config["TM"], config["TN"], config["local"][0]
    return 1.0 + (np.log2(tm) - 3) ** 2 + 0.5 * (np.log2(tn) - 4) ** 2 + 0.3 * (np.log2(lo) - 1) ** 2


SPACE = [{"TM": tm, "TN": tn, "local": [lo, 1, 1]} for tm in (1, 2, 4, 8, 16, 32) for tn in (2, 4, 8, 16, 32)
         for lo in (1, 2, 4, 8)]  # fmt: skip
OPTIMUM = {"TM": 8, "TN": 16, "local": [2, 1, 1]}


def trials_to_optimum(strategy: str, seed: int, samples=None) -> int:
    state = SearchState({"M": 64})
    found = []

    def measure(config):
        found.append(config)
        return Measurement(landscape(config))

    search(state, SPACE, measure, len(SPACE), strategy=strategy, rng=random.Random(seed), samples=samples)
    return next(i for i, c in enumerate(found) if c == OPTIMUM) + 1


def test_model_search_finds_the_optimum_sooner_than_random():
    model = sorted(trials_to_optimum("model", seed) for seed in range(6))
    rand = sorted(trials_to_optimum("random", seed) for seed in range(6))
    assert np.median(model) < np.median(rand) / 2, (model, rand)


def test_warm_start_from_other_workloads_helps():
    """Records of a neighbouring workload (same surface, other sizes) point the model at the optimum at once."""
    warm = [Sample({"M": 32}, c, landscape(c) * 1.3, 0.3) for c in SPACE[::3]]
    cold = np.median([trials_to_optimum("model", seed) for seed in range(4)])
    warmed = np.median([trials_to_optimum("model", seed, warm) for seed in range(4)])
    assert warmed < cold


def test_search_measures_each_config_once_and_respects_the_budget():
    state = SearchState({"M": 1})
    state.add(SPACE[0], Measurement(5.0))  # measured by an earlier run: not again
    seen = []
    search(state, SPACE, lambda c: seen.append(config_key(c)) or Measurement(landscape(c)), 10, strategy="model")
    assert len(seen) == 10 == len(set(seen)) and config_key(SPACE[0]) not in seen


def test_invalid_configs_are_kept_out_of_training_and_best():
    state = SearchState({"M": 1})
    search(state, SPACE, lambda c: Measurement(None, "too big") if c["TM"] == 32 else Measurement(landscape(c)),
           len(SPACE))  # fmt: skip
    assert state.best[0] == OPTIMUM
    assert all(not m.valid for c, m in state.measured.values() if c["TM"] == 32)


def test_stop_search_propagates_after_keeping_measurements():
    state = SearchState({"M": 1})

    def measure(config):
        if state.trials == 3:
            raise StopSearch()
        return Measurement(1.0)

    with pytest.raises(StopSearch):
        search(state, SPACE, measure, 20)
    assert state.trials == 3 and len(state.measured) == 3


def test_cost_model_ranks_unseen_configs():
    model = CostModel()
    rng = random.Random(1)
    train = rng.sample(SPACE, 40)
    assert model.fit([Sample({"M": 64}, c, landscape(c)) for c in train])
    test = [c for c in SPACE if c not in train]
    predicted = model.predict({"M": 64}, test)
    truth = np.log([landscape(c) for c in test])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(ranks(predicted), ranks(truth))[0, 1] > 0.7


def test_ranks_are_taken_per_workload_and_device():
    """The target is a rank within one workload on one device: a workload ten times slower, or another device's
    times, do not shift it."""
    small, big = {"M": 8}, {"M": 512}
    samples = [Sample(small, {"TM": 1}, 0.2), Sample(small, {"TM": 2}, 0.1), Sample(big, {"TM": 1}, 3.0),
               Sample(big, {"TM": 2}, 1.0), Sample(big, {"TM": 4}, 2.0),
               Sample(big, {"TM": 1}, 0.05, 0.3, "other")]  # fmt: skip
    assert workload_ranks(samples).tolist() == [0.5, 0.0, 2 / 3, 0.0, 1 / 3, 0.0]


def test_model_learns_rankings_across_workloads_of_other_scales():
    """Trained on other workloads whose times differ a hundredfold (same ranking), it ranks a new workload's
    configs before measuring any of them."""
    model = CostModel()
    train = [Sample({"M": m}, c, landscape(c) * m, 1.0) for m in (1, 100) for c in SPACE[::2]]
    assert model.fit(train)
    predicted = model.predict({"M": 10}, SPACE)
    assert SPACE[int(np.argmin(predicted))] in sorted(SPACE, key=landscape)[:3]


def _blocked_chain():
    """x[1,24,13,11] -> 3x3 Conv (40) -> depthwise 3x3 -> 1x1 (24) -> 1x1 (80): direct16 on the plain input,
    sep16 (the fused pair), pw16 on a blocked input, once blocked for AVX-512."""
    from edgeinfer.ir import Graph, Node, TensorInfo
    from edgeinfer.passes.memory_plan import plan_memory

    rng = np.random.default_rng(0)
    shapes = {"w1": (40, 24, 3, 3), "w2": (40, 1, 3, 3), "w3": (24, 40, 1, 1), "w4": (80, 24, 1, 1)}
    constants = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    tensors = {name: TensorInfo(name, (1, c, 13, 11), "float32") for name, c in
               (("x", 24), ("a", 40), ("b", 40), ("c", 24), ("y", 80))}  # fmt: skip
    tensors.update({name: TensorInfo(name, value.shape, "float32") for name, value in constants.items()})
    conv = {"strides": [1, 1], "dilations": [1, 1]}
    nodes = [
        Node("direct", "Conv", ["x", "w1"], ["a"], {**conv, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 1}),
        Node("dw", "Conv", ["a", "w2"], ["b"], {**conv, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 40}),
        Node("pw1", "Conv", ["b", "w3"], ["c"], {**conv, "kernel_shape": [1, 1], "pads": [0, 0, 0, 0], "group": 1}),
        Node("pw2", "Conv", ["c", "w4"], ["y"], {**conv, "kernel_shape": [1, 1], "pads": [0, 0, 0, 0], "group": 1}),
    ]
    graph = Graph(nodes, ["x"], ["y"], tensors, constants)
    graph.memory_plan = plan_memory(graph)
    return graph


def test_launch_geometry_is_the_planned_launch(monkeypatch):
    """features.launch_geometry, computed from the workload alone, gives the work-items, accumulators and tail of
    the launch the planner makes for each config of the blocked templates' knob spaces."""
    from edgeinfer.cpu_isa import isa_class
    from edgeinfer.planning import KNOB_SPACES, layout, plan_node
    from edgeinfer.planning.context import PlanContext
    from edgeinfer.tuned_configs import ConfigTable
    from edgeinfer.tuning.features import launch_geometry

    class Recording(ConfigTable):
        def lookup(self, template, workload, default, accept=None):
            self.asked = (template, dict(workload))
            return default(), "default"

    monkeypatch.delenv(layout.LAYOUT_ENV, raising=False)
    isa = isa_class("avx512")
    graph = layout.for_device(_blocked_chain(), "cpu", isa)
    table = Recording("opencl", "test")
    seen = set()
    for node in graph.nodes:
        plan = plan_node(node, PlanContext(graph, table, "cpu", 4096, isa=isa))
        if plan.template not in KNOB_SPACES:
            continue
        template, workload = table.asked
        seen.add(template)
        space = KNOB_SPACES[template].candidates(workload, PlanContext(graph, table, "cpu", 4096, isa=isa))
        for config in space:
            launch = plan_node(node, PlanContext(graph, table, "cpu", 4096, {template: config}, isa=isa)).launches[0]
            geometry = launch_geometry(template, workload, config, isa)
            assert geometry["work_items"] == np.prod(launch.work), (template, config, launch.work)
            assert geometry["accumulators"] == launch.defines["TP"] * launch.defines["NB"]
            row = workload["H"] * workload["W"] if template == "pw16" else workload["W"]
            blocks_ = -(-workload["Co"] // 16)
            tail = (-(-row // config["TP"]) * config["TP"] / row) * (-(-blocks_ // config["NB"]) * config["NB"] * 16
                                                                      / workload["Co"]) - 1  # fmt: skip
            assert geometry["tail_waste"] == pytest.approx(tail)
    assert seen == {"direct16", "sep16", "pw16"}


def test_confirmation_keeps_the_tables_entry_unless_beaten_clearly():
    """A rerun re-times the finalists and the table's entry; a challenger within KEEP_INCUMBENT_WITHIN of the entry
    does not replace it (noise), a clearly faster one does."""
    from edgeinfer.tuning.tuner import KEEP_INCUMBENT_WITHIN, _confirm

    incumbent, challenger, default = {"TP": 1}, {"TP": 2}, {"TP": 3}
    for challenger_ms, winner in ((1.0 / KEEP_INCUMBENT_WITHIN + 0.001, incumbent), (0.9, challenger)):
        times = {"TP=1": 1.0, "TP=2": challenger_ms, "TP=3": 1.2}
        state = SearchState({"C": 8})
        for config in (incumbent, challenger, default):
            state.add(config, Measurement(times[f"TP={config['TP']}"]))
        best, default_ms = _confirm(state, default, lambda c, t=times: Measurement(t[f"TP={c['TP']}"]), incumbent)
        assert best[0] == winner and default_ms == 1.2


def test_record_log_round_trip_and_torn_line(tmp_path):
    log = RecordLog(tmp_path / "r.jsonl")
    log.append(Record("gemm", {"M": 1}, {"TM": 4}, 0.5, "dev"))
    log.append(Record("gemm", {"M": 1}, {"TM": 8}, None, "dev", error="build failed"))
    with open(log.path, "a") as f:
        f.write('{"template": "gemm", "work')  # a run killed mid-write
    again = RecordLog(log.path)
    assert [r.ms for r in again.records] == [0.5, None]
    assert len(again.of_task("gemm:M=1", "dev")) == 2 and not again.of_task("gemm:M=1", "other")


def test_only_configs_the_planner_set_aside_unused_are_untried():
    from edgeinfer.tuning.measure import untried

    assert untried("planner replaced it: tuned via nvidia-cuda-nvidia-corporation-nvidia-h200 (the device's OpenCL")
    assert untried("planner replaced it: planned as gemm, not conv2d (default)")
    assert untried("planner replaced it: nearest (C=64,Co=64,G=1,H=56,KH=1,KW=1,S=1,W=56)")
    # the planner's own fallback for a config it cannot run, and other failures, are the config's
    assert not untried("planner replaced it: default (conv_gemm needs 256 work-items, the kernel allows 128)")
    assert not untried("planner refused it: numpy fallback: 70000 blocks in grid y")
    assert not untried("DeviceError: NVRTC failed") and not untried("")


# ------------------------------------------------------------------ on the OpenCL device (PoCL in CI)

DEVICE = usable_opencl_device()
needs_opencl = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (install pocl-opencl-icd)")


@pytest.fixture
def tune_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEINFER_TUNED_DIR", str(tmp_path / "tables"))
    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path / "programs"))
    pack = tmp_path / "conv.pack"
    conv_pack(pack)
    return pack


@needs_opencl
@pytest.mark.parametrize("layout", ["nchw", "default"])
def test_tune_finds_a_checked_config_that_session_then_uses(tune_env, monkeypatch, layout, tmp_path):
    import edgeinfer
    from edgeinfer.tuning import TuneOptions, tune

    if layout == "nchw":
        monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")
    result = tune([tune_env], TuneOptions(DEVICE.spec, trials=4, repeat=3, progress=False), log=lambda s: None)
    assert not result.stopped and result.results
    for done in result.results:
        assert done.best_config is not None and done.best_ms > 0 and done.trials >= 2
    table = json.loads(result.table_path.read_text())
    assert table["isa"] and table["family"] and len(table["entries"]) == len(result.results)
    for entry in table["entries"]:
        assert {"time_ms", "trials", "device_key", "driver", "date", "edgeinfer_version"} <= set(entry)
    records = RecordLog(result.records_path).records
    assert len(records) >= sum(d.trials for d in result.results)
    # Session picks the user table up, and says so
    session = edgeinfer.Session(tune_env, device=DEVICE.spec)
    sources = [row["config_source"] for row in session.explain() if row["op"] != "Conv" or row["placement"]]
    tunable = [row for row in session.explain() if row["kernel"] in {d.task.template for d in result.results}]
    assert tunable and all(row["config_source"] == "tuned (user table)" for row in tunable), sources
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32)
    reference = edgeinfer.Session(tune_env, device="cpu:numpy").run({"x": x})["y"]
    np.testing.assert_allclose(session.run({"x": x})["y"], reference, rtol=1e-4, atol=1e-4)


@needs_opencl
def test_rerun_resumes_from_the_log(tune_env, monkeypatch):
    from edgeinfer.tuning import TuneOptions, tune

    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")
    options = TuneOptions(DEVICE.spec, trials=3, repeat=2, progress=False)
    first = tune([tune_env], options, log=lambda s: None)
    before = {d.task.key: d.trials for d in first.results}
    options.trials = 5
    second = tune([tune_env], options, log=lambda s: None)
    for done in second.results:
        assert done.trials == min(5, before[done.task.key] + 2) or done.trials >= before[done.task.key]
        assert done.trials <= 5


@needs_opencl
def test_wrong_outputs_and_failed_builds_are_invalid_not_crashes(tune_env, monkeypatch):
    from edgeinfer.pack import read_pack
    from edgeinfer.tuning.measure import Measurer
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.workloads import collect_tasks

    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")
    target = select_target(DEVICE.spec)
    task = next(t for t in collect_tasks({"conv": read_pack(tune_env)}, target) if t.template == "gemm")
    measurer = Measurer(target, repeat=2)
    assert measurer.measure(task, {"VEC": "B", "TM": 8, "NV": 1, "local": [1, 1, 1]}).valid
    too_big = measurer.measure(task, {"VEC": "L", "TM": 2, "TN": 1, "WM": 128, "WN": 128, "BK": 8})
    assert not too_big.valid and too_big.error
    unknown = measurer.measure(task, {"VEC": "N", "TM": 3, "TN": 5, "UNROLL_K": 4})  # no such vector width
    assert not unknown.valid and unknown.error
    measurer._references[task.key] = {name: v + 1 for name, v in measurer.reference(task).items()}
    wrong = measurer.measure(task, {"VEC": "B", "TM": 8, "NV": 1, "local": [1, 1, 1]})
    assert not wrong.valid and "NumPy reference" in wrong.error


@needs_opencl
def test_time_budget_stops_cleanly(tune_env, monkeypatch):
    from edgeinfer.tuning import TuneOptions, tune

    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")
    result = tune([tune_env], TuneOptions(DEVICE.spec, trials=50, time_budget=1e-6, progress=False),
                  log=lambda s: None)  # fmt: skip
    assert result.stopped == "time budget spent"


@needs_opencl
def test_report_says_how_each_workload_is_covered(tune_env, monkeypatch):
    from edgeinfer.tuning import coverage_report
    from edgeinfer.tuning.report import COVERAGE

    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")
    key, rows = coverage_report([tune_env], DEVICE.spec)
    assert key == DEVICE.device_key and len(rows) == 2
    assert all(row.coverage in COVERAGE and row.models == ["conv"] for row in rows)


def test_knob_docs_match_the_knob_spaces():
    from conftest import REPO
    from edgeinfer.tuning.knob_docs import render

    assert (REPO / "docs" / "knobs.md").read_text() == render(), "regenerate: python -m edgeinfer.tuning.knob_docs"


@needs_opencl
def test_cli_tune_and_report(tune_env, monkeypatch, tmp_path, capsys):
    from edgeinfer.cli import main

    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")
    out = tmp_path / "table.json"
    args = ["tune", str(tune_env), "--device", DEVICE.spec, "--trials", "2", "--repeat", "2", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 workloads tuned" in printed and out.is_file() and out.with_name("table.records.jsonl").is_file()
    assert main(["tune", str(tune_env), "--device", DEVICE.spec, "--report"]) == 0
    report = capsys.readouterr().out
    assert "2 tunable workloads" in report and "default" in report  # --out went elsewhere: the device has none


@needs_opencl
@pytest.mark.parametrize("forced", ["nchw", "nchw8c", "nchw16c"])
def test_tasks_are_the_templates_the_executor_runs(tune_env, monkeypatch, forced):
    """The tuner plans the graph exactly as the executor does (layout and channel block included)."""
    import edgeinfer
    from edgeinfer.pack import read_pack
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.workloads import collect_tasks

    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", forced)
    tasks = collect_tasks({"conv": read_pack(tune_env)}, select_target(DEVICE.spec))
    ran = {row["kernel"] for row in edgeinfer.Session(tune_env, device=DEVICE.spec).explain()}
    assert tasks and {t.template for t in tasks} <= ran, (ran, [t.template for t in tasks])
