"""Checks of a graph built from a schema-valid header: every node against its op, the memory plan, the pipeline.

The op checks (``validation/*_ops.py``) give each output's shape and dtype; here they are compared with
the tensor table, and the graph-wide rules are enforced: data-dependent (dynamic) tensors are exactly
those downstream of a dynamic-shape op and run on the CPU, planned tensors that are alive at the same
time never share bytes, and an image pipeline names a model input of the size it says.
"""

from __future__ import annotations

import bisect
import heapq
import math
from typing import Any

from edgeinfer.errors import PackError
from edgeinfer.ir import HOST, Graph, Node
from edgeinfer.ops import OPS
from edgeinfer.passes.memory_plan import planned_names, view_roots
from edgeinfer.validation import elementwise_ops, tensor_ops, window_ops  # noqa: F401  (register the checks)
from edgeinfer.validation.context import RULES, NodeCheck

# A check that trips over a value it did not foresee still refuses the pack rather than crash the loader.
_CHECK_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError, AttributeError)


def validate_graph(graph: Graph, where: str) -> None:
    """Raise :class:`PackError` naming the node and field for anything a backend could not run as recorded."""
    for name in graph.inputs:
        if graph.tensors[name].dynamic:
            raise PackError(f"{where} is corrupt: graph input {name!r} is marked dynamic")
    for node in graph.nodes:
        check_node(node, graph, where)
    check_memory_plan(graph, where)
    check_pipeline(graph, where)


def check_node(node: Node, graph: Graph, where: str) -> None:
    """Counts, attributes, dtypes and output shapes of one node, as its op defines them."""
    rule = RULES[node.op]
    c = NodeCheck(node, graph, where)
    lo, hi = rule.inputs
    if not lo <= len(node.inputs) <= hi or not all(node.inputs[:lo]):
        c.fail("inputs", f"{lo} to {hi} tensor names, the first {lo} present", node.inputs)
    lo, hi = rule.outputs
    if not lo <= len(node.outputs) <= hi or not node.outputs[0]:
        c.fail("outputs", f"{lo} to {hi} tensor names, the first present", node.outputs)
    unknown = sorted(set(node.attrs) - rule.attrs)
    if unknown:
        c.fail("attributes", f"among {sorted(rule.attrs)} (ONNX opset 17 and the fused-Conv extension)", unknown)
    try:
        expected = rule.check(c) or []
    except _CHECK_ERRORS as e:
        raise PackError(f"{where}: node {node.name!r} ({node.op}) has inconsistent attributes or shapes ({e})") from e
    spec = OPS[node.op]
    dynamic_in = any(graph.tensors[i].dynamic for i in node.inputs if i)
    dynamic = spec.dynamic_shape or dynamic_in
    if (dynamic or spec.cpu_only) and node.placement != HOST:
        c.fail("placement", "'cpu' (data-dependent ops and their readers run on the CPU)", node.placement)
    for k, out in enumerate(node.outputs):
        if not out:
            continue
        info = graph.tensors[out]
        if info.dynamic != dynamic:
            c.fail(f"output {out!r}", "dynamic" if dynamic else "static (nothing data-dependent precedes it)")
        if dynamic_in or k >= len(expected) or expected[k] is None:
            continue
        shape, dtype = expected[k]
        if info.shape != tuple(shape):
            c.fail(f"output {out!r} shape", f"{list(shape)} (what the op computes)", list(info.shape))
        if dtype is not None and info.dtype != dtype:
            c.fail(f"output {out!r} dtype", dtype, info.dtype)


def check_memory_plan(graph: Graph, where: str) -> None:
    """Only planned tensors have offsets, and storages alive at the same time never share bytes.

    A view (Reshape & co.) either shares its input's offset, and then its bytes live as long as either,
    or has its own (packs from before views); the sweep keeps the live storages sorted by offset, so
    that a new one needs comparing with its two neighbours only.
    """
    plan = graph.memory_plan
    planned = planned_names(graph)
    stray = sorted(set(plan.offsets) - planned)
    if stray:
        raise PackError(
            f"{where} is corrupt: memory_plan places {stray[0]!r}, which is a graph input or output, "
            "a constant or dynamic"
        )
    spans: dict[str, list[Any]] = {}  # storage -> [first, last, offset, nbytes]
    roots = view_roots(graph, planned)
    storage: dict[str, str] = {}
    for name in plan.offsets:
        root = roots.get(name)
        storage[name] = root if root in plan.offsets and plan.offsets[root] == plan.offsets[name] else name
    for index, node in enumerate(graph.nodes):
        for name in (*node.inputs, *node.outputs):
            key = storage.get(name)
            if key is None:
                continue
            span = spans.setdefault(key, [index, index, plan.offsets[key], 0])
            span[1] = index
            span[3] = max(span[3], graph.tensors[name].nbytes)
    live: list[tuple[int, int, str]] = []  # (offset, end, storage), sorted by offset, pairwise disjoint
    ends: list[tuple[int, int, int, str]] = []  # heap of (last, offset, end, storage)
    for key, (first, last, offset, nbytes) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        while ends and ends[0][0] < first:
            _, o, e, k = heapq.heappop(ends)
            live.pop(bisect.bisect_left(live, (o, e, k)))
        if nbytes == 0:
            continue
        item = (offset, offset + nbytes, key)
        i = bisect.bisect_left(live, item)
        for other in live[max(i - 1, 0) : i + 1]:
            if other[0] < item[1] and item[0] < other[1]:
                raise PackError(
                    f"{where} is corrupt: memory_plan puts {key!r} and {other[2]!r} in the same bytes "
                    "while both are alive"
                )
        live.insert(i, item)
        heapq.heappush(ends, (last, *item))


def check_pipeline(graph: Graph, where: str) -> None:
    """The stored image pipeline is one the compiler could have written for this graph's inputs and outputs."""
    pipeline = graph.metadata.get("pipeline")
    if pipeline is None:
        return
    from edgeinfer.errors import PipelineError
    from edgeinfer.pipelines.config import bind_to_model, validate_pipeline

    try:
        checked = validate_pipeline(pipeline)
        name = pipeline.get("input")
        if name not in graph.inputs:
            raise PipelineError(f"pipeline input {name!r} is not a model input {graph.inputs}")
        bound = bind_to_model(checked, {name: graph.tensors[name].shape})
        if bound["size"] != pipeline.get("size"):
            raise PipelineError(f"pipeline size {pipeline.get('size')} is not the input's {bound['size']}")
        info = graph.tensors[name]
        if info.dtype != checked["dtype"] or math.prod(info.shape) == 0:
            raise PipelineError(f"pipeline dtype {checked['dtype']} is not the input's {info.dtype}")
        output = pipeline.get("output")
        if output is not None and output not in graph.outputs:
            raise PipelineError(f"pipeline output {output!r} is not a model output {graph.outputs}")
    except (PipelineError, *_CHECK_ERRORS) as e:
        raise PackError(f"{where}: metadata.pipeline is not valid for this model: {e}") from e
