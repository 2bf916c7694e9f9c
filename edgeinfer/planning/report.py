"""What a GPU executable says about its plans: ``explain()`` rows and ``profile()`` rows, from the node records and
the times an API measured."""

from __future__ import annotations

from typing import Any

from edgeinfer.ir import DEVICE, HOST, Graph
from edgeinfer.planning.plan import NodeRecord

# Profile rows of the steps that belong to no node: reading the outputs, writing the inputs.
READ_OUTPUTS, WRITE_INPUTS = -1, -2


def explain_rows(records: list[NodeRecord]) -> list[dict[str, Any]]:
    """One row per node: where it runs, its kernel template and config, and where the config came from."""
    rows = []
    for record in records:
        node, plan = record.node, record.plan
        if plan is None:
            rows.append({"name": node.name, "op": node.op, "placement": HOST, "kernel": "numpy", "config": {},
                         "config_source": f"numpy fallback: {record.fallback_reason}"})  # fmt: skip
        else:
            rows.append({"name": node.name, "op": node.op, "placement": DEVICE, "kernel": plan.template,
                         "config": plan.config, "config_source": plan.config_source,
                         "launches": len(plan.launches)})  # fmt: skip
    return rows


def profile_rows(
    records: list[NodeRecord],
    graph: Graph,
    median_ms: dict[int, float],
    output_reads: list[str],
    written_inputs: list[str],
) -> list[dict[str, Any]]:
    """Per node (record index, or READ_OUTPUTS / WRITE_INPUTS for the copies of ``output_reads`` and
    ``written_inputs``): its median time, achieved GFLOP/s and GB/s, and share of the total; slowest first."""
    flops = graph.metadata.get("node_flops", {})
    total = sum(median_ms.values()) or 1.0
    rows = []
    for index, ms in median_ms.items():
        if index in (READ_OUTPUTS, WRITE_INPUTS):
            names = output_reads if index == READ_OUTPUTS else written_inputs
            if not names:
                continue
            name = "(read outputs)" if index == READ_OUTPUTS else "(write inputs)"
            op, kernel, node_flops = "-", "copy", 0
            nbytes = sum(graph.tensors[n].nbytes for n in names)
        else:
            record = records[index]
            node = record.node
            name, op = node.name, node.op
            kernel = record.plan.template if record.plan else "numpy"
            node_flops = float(flops.get(node.name, 0))
            nbytes = sum(_nbytes(graph, n) for n in node.inputs + node.outputs if n)
        seconds = ms * 1e-3
        rows.append({
            "name": name, "op": op, "kernel": kernel, "time_ms": ms,
            "gflops": node_flops / seconds * 1e-9 if seconds > 0 else 0.0,
            "gbps": nbytes / seconds * 1e-9 if seconds > 0 else 0.0,
            "share": ms / total,
        })  # fmt: skip
    rows.sort(key=lambda row: -row["time_ms"])
    return rows


def _nbytes(graph: Graph, name: str) -> int:
    if name in graph.constants:
        return graph.constants[name].nbytes
    return graph.tensors[name].nbytes
