"""Cost-model search versus random search on the same budget (issue 15's evidence).

    python benchmarks/tuner_search.py measure PACK... --device opencl --workloads 4 --out spaces.json [--local 1,1,1]
    python benchmarks/tuner_search.py simulate spaces.json [more.json] --plot docs/tuner_search.png

``measure`` times *every* config of the knob spaces of the K costliest tunable workloads of the packs (by the
default config's time; at most ``--per-template`` of each template) on the device (in ``--rounds`` whole passes
over each space, each config's median kept), checked against the NumPy
reference like any tuning trial, and writes them to JSON. ``simulate`` then replays searches on those tables,
many seeds each, so that every strategy meets exactly the same measurements (no machine noise between strategies):

- ``random``: configs in random order (what an exhaustive tuner does with a budget);
- ``model``: the tuner's search (gradient-boosted trees ranking the configs, 10 % exploration), cold: no prior
  records;
- ``model+transfer``: the same, warm-started with 16 random records of each *other* workload of the same
  template and device in the file (what a tuning run has once it tuned a pack's earlier layers with --trials 16);
  never a record of the workload searched.
- ``model+family``: transfer, plus what the tuner also learns from on a new device: the shipped tables of the
  *other* devices of its family (their winners and times, at the weight of another device; tuner.py
  ``_training_samples``). Never the device's own table, which holds the answers.

A replay sees a config's time only once the search "measures" it. ``--local 1,1,1`` keeps the configs of that
work-group shape (and those without one): what CPUs are offered since work-groups of one (RESULTS 6d).

It prints, per workload, the median number of trials each strategy needs to get within 5 % of the best
config in the table, and plots best-found latency (relative to the best) against trials.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeinfer.cpu_isa import isa_class  # noqa: E402
from edgeinfer.tuning.cost_model import CostModel, Sample  # noqa: E402
from edgeinfer.tuning.measure import Measurement  # noqa: E402
from edgeinfer.tuning.records import config_key  # noqa: E402
from edgeinfer.tuning.search import SearchState, search  # noqa: E402

WITHIN = 1.05
TRANSFER_TRIALS = 16  # records per other workload in the transfer variant (a tuning run's --trials)
STRATEGIES = ("random", "model", "model+transfer", "model+family")


def measure_spaces(args: argparse.Namespace) -> None:
    from edgeinfer.pack import read_pack
    from edgeinfer.tuned_configs import ConfigTable
    from edgeinfer.tuning.measure import Measurer
    from edgeinfer.tuning.targets import select_target
    from edgeinfer.tuning.tuner import default_config, knob_candidates
    from edgeinfer.tuning.workloads import collect_tasks

    target = select_target(args.device)
    tasks = collect_tasks({Path(p).stem: read_pack(p) for p in args.packs}, target, set(args.templates.split(",")))
    measurer = Measurer(target, repeat=args.repeat)
    costs = []
    for task in tasks:
        ctx = target.plan_context(task.graph, ConfigTable(target.api, target.info.device_key))
        default = default_config(task, ctx)
        result = measurer.measure(task, default) if default else Measurement(None)
        costs.append((result.ms or 0.0, task, ctx))
    costs.sort(key=lambda item: -item[0])
    chosen, per_template = [], {}
    for item in costs:  # the costliest, at most --per-template of each template
        if per_template.get(item[1].template, 0) < args.per_template and len(chosen) < args.workloads:
            chosen.append(item)
            per_template[item[1].template] = per_template.get(item[1].template, 0) + 1
    spaces = []
    local = [int(v) for v in args.local.split(",")] if args.local else None
    for default_ms, task, ctx in chosen:
        candidates = [c for c in knob_candidates(task, ctx) if local is None or c.get("local", local) == local]
        print(f"{task.template} {task.signature}: default {default_ms:.4f} ms, {len(candidates)} configs", flush=True)
        rows = [{"config": config, "rounds": [], "error": ""} for config in candidates]
        for _ in range(args.rounds):  # whole passes over the space: drift on a shared machine hits every config
            for row in rows:
                if row["error"]:
                    continue
                result = measurer.measure(task, row["config"])
                row["rounds"].append(result.ms)
                row["error"] = result.error if result.ms is None else ""
        for row in rows:
            row["ms"] = None if row["error"] else statistics.median(row["rounds"])
        valid = [r["ms"] for r in rows if r["ms"] is not None]
        print(f"  valid {len(valid)}, best {min(valid):.4f} ms, median {statistics.median(valid):.4f} ms", flush=True)
        spaces.append({"template": task.template, "workload": task.workload, "default_ms": default_ms, "rows": rows,
                       "device_key": target.info.device_key, "family": target.info.family,
                       "isa": target.info.isa})  # fmt: skip
        Path(args.out).write_text(json.dumps(spaces, indent=1))


def replay(space: dict, strategy: str, seed: int, others: list[dict], max_trials: int = 10**6) -> list[float]:
    """Best-found ms after each trial of one simulated search over ``space``'s measured configs (the model's
    searches stop after ``max_trials``: refitting the trees for every batch is what costs time here)."""
    lookup = {config_key(r["config"]): r for r in space["rows"]}
    configs = [r["config"] for r in space["rows"]]
    samples = family_samples(space) if strategy == "model+family" else []
    if strategy.startswith("model+"):  # transfer and family: what a tuning run has of its earlier workloads
        pick = random.Random(seed + 1)
        for other in others:
            if other["template"] == space["template"]:
                valid = [r for r in other["rows"] if r["ms"] is not None]
                chosen = pick.sample(valid, min(TRANSFER_TRIALS, len(valid)))
                samples += [Sample(other["workload"], r["config"], r["ms"], 1.0, other["device_key"]) for r in chosen]
    best, curve = float("inf"), []

    def measure(config):
        nonlocal best
        row = lookup[config_key(config)]
        if row["ms"] is not None:
            best = min(best, row["ms"])
        curve.append(best)
        return Measurement(row["ms"], row["error"])

    kind = "random" if strategy == "random" else "model"
    budget = len(configs) if kind == "random" else min(len(configs), max_trials)
    rng = random.Random(seed)
    model = CostModel(space["template"], isa_class(space.get("isa") or "simt"), rng.randrange(2**31))
    state = SearchState(space["workload"], space["device_key"])
    search(state, configs, measure, budget, strategy=kind, samples=samples, rng=rng, model=model)
    return curve


def family_samples(space: dict) -> list[Sample]:
    """The shipped tables of the other devices of ``space``'s family: the template's winners, as tuner.py's
    ``_training_samples`` gives them to the cost model (ranked alone, at the weight of another device)."""
    from edgeinfer.tuned_configs import family_tables
    from edgeinfer.tuning.cost_model import OTHER_DEVICE_WEIGHT
    from edgeinfer.tuning.tuner import TABLE_APIS

    samples = []
    for api in TABLE_APIS if space.get("family") else ():
        for table in family_tables(api, space["family"]):
            if table.device_key == space["device_key"]:
                continue
            for entry in table.entries.get(space["template"], {}).values():
                if entry.get("time_ms"):
                    samples.append(Sample(entry["workload"], entry["config"], float(entry["time_ms"]),
                                          OTHER_DEVICE_WEIGHT, f"table:{api}:{table.device_key}"))  # fmt: skip
    return samples


def keep_local(space: dict, local: list[int] | None) -> dict:
    """``space`` with only the configs of work-group shape ``local`` (and those without one)."""
    if local is None:
        return space
    return {**space, "rows": [r for r in space["rows"] if r["config"].get("local", local) == local]}


def trials_to_reach(curve: list[float], target: float) -> int:
    """Trials until the best found is within target; one more than the curve's length if never."""
    return next((i + 1 for i, ms in enumerate(curve) if ms <= target), len(curve) + 1)


def simulate(args: argparse.Namespace) -> None:
    local = [int(v) for v in args.local.split(",")] if args.local else None
    spaces = [keep_local(s, local) for path in args.spaces for s in json.loads(Path(path).read_text())]
    print(f"{'workload':58s} {'configs':>7s} {'in 5%':>5s} " + " ".join(f"{s:>15s}" for s in STRATEGIES)
          + "  (median trials to 5%; x random)")  # fmt: skip
    curves: dict[str, dict[str, np.ndarray]] = {}
    summary = {s: [] for s in STRATEGIES}
    for index, space in enumerate(spaces):
        name = f"{space['template']} " + ",".join(f"{k}={v}" for k, v in sorted(space["workload"].items()))
        valid = [r["ms"] for r in space["rows"] if r["ms"] is not None]
        target = min(valid) * WITHIN
        others = [s for j, s in enumerate(spaces) if j != index and s.get("device_key") == space.get("device_key")]
        needed, curves[name], within = {}, {}, sum(ms <= target for ms in valid)
        for strategy in STRATEGIES:
            runs = [replay(space, strategy, seed, others, args.max_trials) for seed in range(args.seeds)]
            needed[strategy] = statistics.median(trials_to_reach(c, target) for c in runs)
            summary[strategy].append(needed[strategy] / len(space["rows"]))
            length = min(len(c) for c in runs)
            curves[name][strategy] = np.mean([np.array(c[:length]) / min(valid) for c in runs], axis=0)
        cells = [f"{needed[s]:8.1f}" + (f" ({needed[s] / needed['random']:.2f})" if s != "random" else " " * 7)
                 for s in STRATEGIES]  # fmt: skip
        print(f"{name[:58]:58s} {len(space['rows']):7d} {within:5d} " + " ".join(cells), flush=True)
    print("median fraction of the space searched to get within 5%: "
          + ", ".join(f"{s} {statistics.median(v):.3f}" for s, v in summary.items()))  # fmt: skip
    print("median over workloads of the trials relative to random's: "
          + ", ".join(f"{s} {statistics.median(a / b for a, b in zip(v, summary['random'])):.3f}"
                      for s, v in summary.items() if s != "random"))  # fmt: skip
    if args.plot:
        plot(curves, Path(args.plot))


def plot(curves: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(curves)
    cols = min(3, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, by_strategy) in zip(axes.flat, curves.items()):
        for strategy, curve in by_strategy.items():
            ax.plot(np.arange(1, len(curve) + 1), curve, label=strategy)
        ax.axhline(WITHIN, color="grey", linestyle=":", linewidth=1)
        ax.set_title(name if len(name) < 48 else name[:46] + "...", fontsize=7)
        ax.set_xscale("log")
        ax.set_ylim(0.98, min(3.0, max(c.max() for c in by_strategy.values()) * 1.02))
        ax.set_xlabel("trials", fontsize=8)
        ax.set_ylabel("best found / best", fontsize=8)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("packs", nargs="+")
    m.add_argument("--device", default="opencl")
    m.add_argument("--workloads", type=int, default=4)
    m.add_argument("--per-template", type=int, default=2, help="at most this many workloads of one template")
    m.add_argument("--templates", default="gemm,conv2d,depthwise,pw16,direct16,dw16,sep16")
    m.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (their median)")
    m.add_argument("--rounds", type=int, default=1, help="passes over each space; a config's time is their median")
    m.add_argument("--out", default="spaces.json")
    m.add_argument("--local", help="measure only the configs of this work-group shape, e.g. 1,1,1 (what CPUs run)")
    s = sub.add_parser("simulate")
    s.add_argument("spaces", nargs="+")
    s.add_argument("--seeds", type=int, default=20)
    s.add_argument("--max-trials", type=int, default=80, help="model searches stop here (not reached: counted as more)")
    s.add_argument("--local", help="keep only configs of this work-group shape, e.g. 1,1,1 (CPUs since session 9)")
    s.add_argument("--plot")
    args = parser.parse_args()
    if args.command == "measure":
        measure_spaces(args)
    else:
        simulate(args)


if __name__ == "__main__":
    main()
