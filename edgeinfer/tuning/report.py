"""``edgeinfer tune --report``: where each tunable workload of a pack gets its config on a device."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgeinfer.pack import read_pack
from edgeinfer.tuning.targets import select_target
from edgeinfer.tuning.workloads import collect_tasks

COVERAGE = ("exact", "nearest", "borrowed", "default")


@dataclass
class CoverageRow:
    template: str
    signature: str
    coverage: str  # one of COVERAGE
    source: str  # as Session.explain() says it
    models: list[str]


def coverage_report(packs: list[Path], device: str) -> tuple[str, list[CoverageRow]]:
    """(device key, one row per distinct tunable workload of ``packs``): covered exactly by the device's table
    (its own or the user's), by its nearest tuned workload, by a table borrowed from a sibling device, or not
    at all (heuristic default). On CUDA the same GPU's OpenCL table counts as borrowed."""
    target = select_target(device)
    graphs = {Path(p).stem: read_pack(p) for p in packs}
    table = target.config_table()
    rows = []
    for task in collect_tasks(graphs, target):
        ctx = target.plan_context(task.graph, table)
        _, source = ctx.config(task.template, task.workload, dict)
        if " via " in source and not source.startswith("default"):
            coverage = "borrowed"
        elif source.startswith("tuned"):
            coverage = "exact"
        elif source.startswith("nearest"):
            coverage = "nearest"
        else:
            coverage = "default"
        rows.append(CoverageRow(task.template, task.signature, coverage, source, task.models))
    return target.info.device_key, rows


def format_report(device_key: str, rows: list[CoverageRow]) -> str:
    counts = Counter(row.coverage for row in rows)
    lines = [f"device {device_key}: {len(rows)} tunable workloads"]
    lines += [f"  {name:9s} {counts.get(name, 0):4d}" for name in COVERAGE]
    lines.append("")
    width = max((len(row.signature) for row in rows), default=10)
    for row in rows:
        lines.append(f"{row.coverage:9s} {row.template:10s} {row.signature:{width}s}  {row.source}")
    return "\n".join(lines)
