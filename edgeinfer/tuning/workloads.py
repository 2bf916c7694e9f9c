"""The tunable work of a pack on one device: distinct (template, workload) pairs and a node for each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeinfer.ir import DEVICE, Graph, Node
from edgeinfer.passes.flops import node_flops
from edgeinfer.planning import KNOB_SPACES, NoKernel, layout, plan_node
from edgeinfer.tuned_configs import ConfigTable, workload_signature
from edgeinfer.tuning.targets import TuningTarget

TUNABLE_OPS = ("Conv", "Gemm", "MatMul", layout.SEPARABLE)


@dataclass
class TuningTask:
    """One (template, workload) of a pack: ``graph`` is one node that has it, alone (see :func:`single_node`)."""

    template: str
    workload: dict[str, Any]
    graph: Graph
    feeds: dict[str, np.ndarray]
    models: list[str] = field(default_factory=list)  # the packs that have it (for the report)
    flops: int = 0  # of every node that has it, in every pack (the tuner visits the costliest first)

    @property
    def signature(self) -> str:
        return workload_signature(self.workload)

    @property
    def key(self) -> str:
        return f"{self.template}:{self.signature}"


class _RecordingTable(ConfigTable):
    """A table that answers every lookup with the default and remembers the last (template, workload) asked."""

    def lookup(self, template, workload, default, accept=None):
        self.asked = (template, dict(workload))
        return default(), "default"


def collect_tasks(
    graphs: dict[str, Graph], target: TuningTarget, templates: set[str] | None = None
) -> list[TuningTask]:
    """Distinct tunable (template, workload) pairs of ``graphs`` (name -> pack graph) on ``target``'s device, in
    the order met, with the FLOPs of all their nodes; ``templates`` limits them."""
    tasks: dict[str, TuningTask] = {}
    for model, pack_graph in graphs.items():
        graph = target.device_graph(pack_graph)
        recorder = _RecordingTable(target.api, target.info.device_key)
        ctx = target.plan_context(graph, recorder)
        for node in graph.nodes:
            if node.placement != DEVICE or node.op not in TUNABLE_OPS:
                continue
            recorder.asked = None
            try:
                plan_node(node, ctx)
            except NoKernel:
                continue
            if recorder.asked is None:
                continue
            template, workload = recorder.asked
            if template not in KNOB_SPACES or (templates and template not in templates):
                continue
            key = f"{template}:{workload_signature(workload)}"
            if key not in tasks:
                single, feeds = single_node(graph, node)
                tasks[key] = TuningTask(template, workload, single, feeds)
            tasks[key].flops += graph_node_flops(graph, node)
            if model not in tasks[key].models:
                tasks[key].models.append(model)
    return list(tasks.values())


def graph_node_flops(graph: Graph, node: Node) -> int:
    """``node``'s FLOPs as the compiler counted them (the device layout adds its fused separable nodes), else counted
    here (a graph made without the compiler)."""
    counted = graph.metadata.get("node_flops", {}).get(node.name)
    return int(counted) if counted is not None else node_flops(node, graph)


def single_node(graph: Graph, node: Node) -> tuple[Graph, dict[str, np.ndarray]]:
    """``node`` alone, its non-constant inputs becoming graph inputs with seeded random data (channel-blocked
    inputs get zero padding lanes, as real blocked tensors have)."""
    rng = np.random.default_rng(0)
    inputs = [name for name in dict.fromkeys(node.inputs) if name and name not in graph.constants]
    names = set(inputs) | {o for o in node.outputs if o}
    constants = {name: graph.constants[name] for name in node.inputs if name in graph.constants}
    tensors = {name: graph.tensors[name] for name in names}
    single = Graph([node], inputs, [o for o in node.outputs if o], tensors, constants, dict(graph.metadata))
    feeds = {}
    for name in inputs:
        info = tensors[name]
        data = rng.standard_normal(info.shape).astype(info.dtype)
        if len(info.shape) == 5:  # channel-blocked: which lanes are real is in the node's layout record
            data = _zero_padding_lanes(data, node, name)
        feeds[name] = data
    return single, feeds


def _zero_padding_lanes(data: np.ndarray, node: Node, name: str) -> np.ndarray:
    record = node.attrs.get(layout.LAYOUT_ATTR) or {}
    channels = dict(zip(node.inputs, record.get("channels", [])))
    real = channels.get(name, 0)
    if real:
        block = data.shape[-1]
        flat = data.transpose(0, 1, 4, 2, 3).reshape(data.shape[0], -1, *data.shape[2:4])
        flat[:, real:] = 0
        data = np.ascontiguousarray(flat.reshape(data.shape[0], -1, block, *data.shape[2:4]).transpose(0, 1, 3, 4, 2))
    return data
