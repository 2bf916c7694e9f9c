"""One tuning run over one or more packs on one OpenCL or CUDA device (``edgeinfer tune``)."""

from __future__ import annotations

import datetime
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeinfer.cpu_isa import isa_class
from edgeinfer.pack import read_pack
from edgeinfer.planning import KNOB_SPACES, NoKernel, plan_node
from edgeinfer.tuned_configs import ConfigTable, family_tables, read_table, user_tables_dir, write_table
from edgeinfer.tuning.cost_model import OTHER_DEVICE_WEIGHT, CostModel, Sample, require_sklearn
from edgeinfer.tuning.measure import Measurement, Measurer, untried
from edgeinfer.tuning.records import Record, RecordLog, config_key
from edgeinfer.tuning.search import SearchState, StopSearch, search
from edgeinfer.tuning.targets import TuningTarget, select_target
from edgeinfer.tuning.workloads import TuningTask, collect_tasks

# The best few configs and the default are timed again, interleaved, before one enters the table: one lucky
# measurement on a shared machine must not make a config the winner.
CONFIRM_TOP, CONFIRM_ROUNDS = 3, 2
# A rerun keeps the table's current entry unless a challenger beats it by more than this in the confirmation: on the
# shared 2-core VM a resumed run with no new trials re-picked 41 of 76 AVX2 entries on noise alone (session 12).
KEEP_INCUMBENT_WITHIN = 1.03


@dataclass
class TuneOptions:
    device: str = "opencl"  # or "opencl:P:D", "cuda", "cuda:N"
    trials: int = 24  # measured configs per workload (earlier runs' count toward it)
    time_budget: float | None = None  # seconds for the whole run
    out: Path | None = None  # table to write; default: the user's table of the device
    records: Path | None = None  # measurement log; default: beside the table
    templates: set[str] | None = None
    search: str = "model"  # or "random"
    seed: int = 0
    repeat: int = 10
    progress: bool = True


@dataclass
class TaskResult:
    task: TuningTask
    default_ms: float | None
    best_config: dict[str, Any] | None
    best_ms: float | None
    trials: int
    invalid: int


@dataclass
class TuneResult:
    device_key: str
    table_path: Path
    records_path: Path
    results: list[TaskResult] = field(default_factory=list)
    stopped: str = ""  # why the run stopped early ("" if it finished)
    tasks: int = 0


def tune(packs: list[Path], options: TuneOptions, log: Callable[[str], None] = print) -> TuneResult:
    """Tune every tunable workload of ``packs`` on ``options.device``; write the best valid, checked config of
    each into the table. Interrupting (Ctrl-C) or running out of ``time_budget`` keeps what was measured."""
    if options.search == "model":
        require_sklearn()
    target = select_target(options.device)
    info, api = target.info, target.api
    out = options.out or user_tables_dir() / api / f"{info.device_key}.json"
    records_path = options.records or out.with_name(out.stem + ".records.jsonl")
    table = read_table(out, api, info.device_key) if out.is_file() else ConfigTable(api, info.device_key)
    table.family, table.isa = info.family, info.isa
    records = RecordLog(records_path)
    graphs = {Path(p).stem: read_pack(p) for p in packs}
    # The costliest workloads first: a run stopped by its time budget has spent it where the packs spend their time.
    tasks = sorted(collect_tasks(graphs, target, options.templates), key=lambda task: -task.flops)
    result = TuneResult(info.device_key, out, records_path, tasks=len(tasks))
    log(f"tuning {len(tasks)} workloads of {', '.join(graphs)} on {info.spec} {info.name} ({info.isa})")
    log(f"  table: {out}\n  log:   {records_path}")
    measurer = Measurer(target, repeat=options.repeat)
    deadline = time.monotonic() + options.time_budget if options.time_budget else None
    rng = random.Random(options.seed)
    bar = _progress(len(tasks) * options.trials, options.progress)
    try:
        for task in tasks:
            entry = table.entries.get(task.template, {}).get(task.signature)
            incumbent = entry["config"] if entry else target.lent_config(task.template, task.workload)
            done = _tune_task(task, target, measurer, records, options, rng, deadline, bar, incumbent)
            result.results.append(done)
            if done.best_config is not None:
                _enter(table, done, target)
                write_table(table, out)
    except (KeyboardInterrupt, StopSearch) as e:
        result.stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else "time budget spent"
        if table.entries:
            write_table(table, out)
    finally:
        bar.close()
    return result


def _tune_task(task, target: TuningTarget, measurer, records, options, rng, deadline, bar, incumbent=None
               ) -> TaskResult:  # fmt: skip
    info = target.info
    ctx = target.plan_context(task.graph, ConfigTable(target.api, info.device_key))
    candidates = knob_candidates(task, ctx)
    default = default_config(task, ctx)
    state = SearchState(task.workload, info.device_key)
    for record in resumable(records.of_task(task.key, info.device_key), [*candidates, default, incumbent]):
        state.add(record.config, Measurement(record.ms, record.error))
    bar.set_description(f"{task.template} {task.signature}"[:60])

    def measure(config: dict[str, Any], budgeted: bool = True) -> Measurement:
        if budgeted and deadline is not None and time.monotonic() > deadline:
            raise StopSearch()
        result = measurer.measure(task, config)
        records.append(_record(task, config, result, target))
        return result

    def compile_ahead(configs: list[dict[str, Any]]) -> None:
        if deadline is None or time.monotonic() <= deadline:
            target.compile_ahead(task.graph, task.template, configs)

    def on_measured(config: dict[str, Any], result: Measurement) -> None:
        bar.update(1)
        best = state.best
        bar.set_postfix_str(f"best {best[1]:.3f} ms" if best else "no valid config yet")

    # The heuristic default and the table's current entry (a rerun over an existing table; on CUDA, else the same
    # GPU's OpenCL config) are measured first: they compete with every candidate, so tuning never replaces a config
    # by a slower one.
    compile_ahead([c for c in (default, incumbent) if c is not None])
    for config in (default, incumbent):
        if config is not None and config_key(config) not in state.measured:
            state.add(config, measure(config))
            state.trials += 1
            on_measured(config, state.measured[config_key(config)][1])
    already = len(state.measured)
    model = CostModel(task.template, isa_class(info.isa or "simt"), rng.randrange(2**31))
    search(state, candidates, measure, max(0, options.trials - already + state.trials), strategy=options.search,
           samples=_training_samples(task.template, records, target),
           rng=rng, model=model, on_measured=on_measured, on_batch=compile_ahead)  # fmt: skip
    bar.update(max(0, options.trials - state.trials))  # a resumed or exhausted task has fewer to do
    best, default_ms = _confirm(state, default, lambda config: measure(config, budgeted=False), incumbent)
    invalid = sum(not m.valid for _, m in state.measured.values())
    return TaskResult(task, default_ms, best[0] if best else None, best[1] if best else None, len(state.measured),
                      invalid)  # fmt: skip


def resumable(records: list[Record], configs: list[dict[str, Any] | None]) -> list[Record]:
    """The task's records from earlier runs that count as its trials (a rerun resumes from them): those of a config
    still among ``configs`` (the knob space, the default, the table's entry: a config the knob space dropped is no
    trial of today's task) that the planner tried (measure.untried: a config set aside unused is measured again)."""
    wanted = {config_key(c) for c in configs if c is not None}
    return [r for r in records if config_key(r.config) in wanted and not untried(r.error)]


def knob_candidates(task: TuningTask, ctx) -> list[dict[str, Any]]:
    """The task's knob space on ctx's device, each config once."""
    space = KNOB_SPACES[task.template].candidates(task.workload, ctx)
    return list({config_key(c): c for c in space}.values())


def default_config(task: TuningTask, ctx) -> dict[str, Any] | None:
    """The planner's heuristic default for the task's node (what the device runs without a table)."""
    try:
        plan = plan_node(task.graph.nodes[0], ctx)
    except NoKernel:
        return None
    return dict(plan.config) if plan.template == task.template else None


def _confirm(state: SearchState, default, measure, incumbent=None) -> tuple[tuple[dict, float] | None, float | None]:
    """Time the best few configs, the default and the table's current entry again, interleaved; the best of
    each one's times decides. The default competes, so a table never makes a workload slower than no table."""
    valid = sorted(((c, m.ms) for c, m in state.measured.values() if m.valid), key=lambda item: item[1])
    finalists = [c for c, _ in valid[:CONFIRM_TOP]]
    for extra in (default, incumbent):
        measured = state.measured.get(config_key(extra)) if extra is not None else None
        if measured and measured[1].valid and all(config_key(c) != config_key(extra) for c in finalists):
            finalists.append(extra)
    times = {config_key(c): [ms] for c, ms in valid if any(config_key(c) == config_key(f) for f in finalists)}
    for _ in range(CONFIRM_ROUNDS if len(finalists) > 1 else 0):
        for config in finalists:
            result = measure(config)
            if result.valid:
                times.setdefault(config_key(config), []).append(result.ms)
    scored = [(c, min(times[config_key(c)])) for c in finalists if times.get(config_key(c))]
    default_ms = min(times[config_key(default)]) if default is not None and times.get(config_key(default)) else None
    best = min(scored, key=lambda item: item[1]) if scored else None
    entry = config_key(incumbent) if incumbent is not None else None
    kept = next((item for item in scored if config_key(item[0]) == entry), None)
    if best is not None and kept is not None and best[1] * KEEP_INCUMBENT_WITHIN > kept[1]:
        best = kept  # within noise of the table's entry: no churn
    return best, default_ms


# The shipped tables of both APIs teach the cost model: the CUDA kernels are the OpenCL templates with the same
# knobs, and NVIDIA's OpenCL GPUs share the CUDA family (nvidia-cuda-gpu), so a CUDA run learns from the same GPU's
# OpenCL table (at the weight of another device: its times come from another compiler).
TABLE_APIS = ("opencl", "cuda")


def _training_samples(template: str, records: RecordLog, target: TuningTarget) -> list[Sample]:
    """The cost model's warm start: every valid record of the template in the log (this device's at full
    weight, others' lower), and the shipped tables of the device's family (their best configs and times)."""
    device_key = target.info.device_key
    samples = [Sample(r.workload, r.config, r.ms, 1.0 if r.device_key == device_key else OTHER_DEVICE_WEIGHT,
                      r.device_key) for r in records.records if r.template == template and r.valid]  # fmt: skip
    for api in TABLE_APIS:
        for table in family_tables(api, target.info.family):
            weight = 1.0 if (api, table.device_key) == (target.api, device_key) else OTHER_DEVICE_WEIGHT
            for entry in table.entries.get(template, {}).values():
                if entry.get("time_ms"):
                    source = f"table:{api}:{table.device_key}"  # a table's winner: ranked alone, as the fastest
                    samples.append(Sample(entry["workload"], entry["config"], float(entry["time_ms"]), weight,
                                          source))  # fmt: skip
    return samples


def _record(task: TuningTask, config: dict, result: Measurement, target: TuningTarget) -> Record:
    from edgeinfer import __version__

    return Record(task.template, dict(task.workload), dict(config), result.ms, target.info.device_key, result.error,
                  target.driver, _now(), __version__)  # fmt: skip


def _enter(table: ConfigTable, done: TaskResult, target: TuningTarget) -> None:
    from edgeinfer import __version__

    table.add(
        done.task.template,
        done.task.workload,
        done.best_config,
        time_ms=round(done.best_ms, 4),
        default_ms=round(done.default_ms, 4) if done.default_ms else None,
        trials=done.trials,
        device_key=target.info.device_key,
        driver=target.driver,
        date=_now(),
        edgeinfer_version=__version__,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_description(self, text: str) -> None: ...
    def set_postfix_str(self, text: str) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, wanted: bool):
    if not wanted:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True)
