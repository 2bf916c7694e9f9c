"""Memory planning: one arena for all static intermediates, reused as tensors die.

Each planned tensor lives from the node that writes it to the last node that reads it (inclusive, so
a node's inputs and outputs never share bytes), except views: the output of a Reshape / Flatten / Squeeze /
Unsqueeze has the bytes of its input, so it shares its input's offset, and the shared bytes live until the
last reader of either (a backend may then skip the copy: the OpenCL executor does). Tensors are placed
largest first at the lowest offset that overlaps no already-placed tensor whose lifetime overlaps, every
offset aligned to ``alignment`` bytes. Constants, graph inputs and outputs (owned by the caller) and dynamic tensors
(size unknown until run time) are not planned.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeinfer.ir import Graph, MemoryPlan


@dataclass(frozen=True)
class Lifetime:
    name: str
    first: int  # index of the producing node
    last: int  # index of the last reading node (= first if nobody reads it)
    size: int  # bytes, rounded up to the alignment

    def overlaps(self, other: Lifetime) -> bool:
        return self.first <= other.last and other.first <= self.last


VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def planned_names(graph: Graph) -> set[str]:
    """Node outputs the plan places: not graph inputs/outputs (owned by the caller), constants or dynamic."""
    excluded = set(graph.inputs) | set(graph.outputs) | set(graph.constants)
    return {n for node in graph.nodes for n in node.outputs if n and n not in excluded and not graph.tensors[n].dynamic}


def view_roots(graph: Graph, planned: set[str]) -> dict[str, str]:
    """Planned view outputs -> the planned tensor whose bytes they are (followed through chains of views)."""
    roots: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in VIEW_OPS or not node.inputs or not node.outputs:
            continue
        x, y = node.inputs[0], node.outputs[0]
        if x in planned and y in planned and graph.tensors[x].nbytes == graph.tensors[y].nbytes:
            roots[y] = roots.get(x, x)
    return roots


def lifetimes(graph: Graph, alignment: int = 256) -> list[Lifetime]:
    """Lifetime of every storage the plan covers (a tensor and the views of it), in node order."""
    planned = planned_names(graph)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.outputs:
            if name in planned:
                first[name] = last[name] = index
        for name in node.inputs:
            if name in first:
                last[name] = index
    roots = view_roots(graph, planned)
    for view, root in roots.items():
        last[root] = max(last[root], last[view])
    return [
        Lifetime(n, first[n], last[n], _aligned(graph.tensors[n].nbytes, alignment)) for n in first if n not in roots
    ]


def plan_memory(graph: Graph, alignment: int = 256) -> MemoryPlan:
    """Assign arena offsets to every planned tensor and store the plan in ``graph.memory_plan``."""
    placed: list[tuple[int, Lifetime]] = []
    offsets: dict[str, int] = {}
    spans = lifetimes(graph, alignment)
    for span in sorted(spans, key=lambda s: (-s.size, s.first)):
        busy = sorted((off, other.size) for off, other in placed if other.overlaps(span) and other.size)
        offset = 0
        for start, size in busy:
            if offset + span.size <= start:
                break
            offset = max(offset, start + size)
        offsets[span.name] = offset
        placed.append((offset, span))
    views = view_roots(graph, planned_names(graph))
    for view, root in views.items():
        offsets[view] = offsets[root]
    arena = max((off + s.size for off, s in placed), default=0)
    naive = sum(graph.tensors[s.name].nbytes for s in spans) + sum(graph.tensors[v].nbytes for v in views)
    plan = MemoryPlan(
        offsets=dict(sorted(offsets.items(), key=lambda kv: kv[1])),
        arena_bytes=arena,
        naive_bytes=naive,
        alignment=alignment,
    )
    graph.memory_plan = plan
    return plan


def _aligned(nbytes: int, alignment: int) -> int:
    return -(-nbytes // alignment) * alignment
