"""The NumPy backend's executor: runs a graph node by node, with the executor plans and each node's backend state.

The plans (:mod:`.concat`, :mod:`.row_padded`, :mod:`.pool_epilogue`) are decided at prepare time from the
graph alone and leave the pack untouched; what the backend chose for a node (its kernel, native kernels on or
off, its weight cache) is a :class:`NodeRun`, never an attribute added to the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.backends.base import Executable
from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.concat import plan_concat_groups
from edgeinfer.backends.numpy.kernels import KERNELS, NodeState
from edgeinfer.backends.numpy.pool_epilogue import plan_pool_epilogues
from edgeinfer.backends.numpy.row_padded import plan_row_padded
from edgeinfer.errors import InputError
from edgeinfer.ir import HOST, Graph, Node
from edgeinfer.ops import get_op


def run_node(node: Node, env: dict[str, np.ndarray]) -> None:
    """Run one node with its plain NCHW implementation (:mod:`edgeinfer.ops`), reading inputs from and writing
    outputs to ``env`` (the OpenCL host fallback and the frame breakdown use it)."""
    args = [env[name] if name else None for name in node.inputs]
    for name, value in zip(node.outputs, get_op(node.op).fn(args, node.attrs)):
        if name:
            env[name] = value


@dataclass(eq=False)
class NodeRun:
    """One node as the backend runs it: the node (an executor plan may have moved its epilogue), its kernel
    (the backend's own, :data:`.kernels.KERNELS`, or the reference op function) and its state (``None`` for a
    reference op)."""

    node: Node
    kernel: Callable[..., list[np.ndarray]]
    state: NodeState | None = None

    def compute(self, env: dict[str, np.ndarray], **placement: Any) -> None:
        """Run the node on ``env``; ``placement`` (``out``, ``row_padded``) says where a plan wants a Conv's
        result or has its input."""
        args = [env[name] if name else None for name in self.node.inputs]
        if self.state is None:
            results = self.kernel(args, self.node.attrs)
        else:
            results = self.kernel(args, self.node.attrs, self.state, **placement)
        for name, value in zip(self.node.outputs, results):
            if name:
                env[name] = value


def node_run(node: Node, constants: dict[str, np.ndarray] | None = None, native: bool = False) -> NodeRun:
    """How the backend runs ``node``: Conv, MaxPool and Concat with its own kernels (channels-last, with the
    ``native`` kernels where they apply), the rest with the reference ops.

    A Conv whose weight and bias are among ``constants`` gets a cache: its weight layouts are then built on the
    first run only; a MaxPool gets one for the native kernel's geometry.
    """
    kernel = KERNELS.get(node.op)
    if kernel is None:
        return NodeRun(node, get_op(node.op).fn)
    constant_weights = constants is not None and all(name in constants for name in node.inputs[1:3] if name)
    if node.op == "Conv":
        return NodeRun(node, kernel, NodeState(native, {} if constant_weights else None))
    if node.op == "MaxPool":
        return NodeRun(node, kernel, NodeState(native, {} if native else None))
    return NodeRun(node, kernel, NodeState())


def _c_order(x: np.ndarray) -> np.ndarray:
    """``x`` in C order: graph outputs leave the backend as plain arrays, whatever layout produced them."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)  # (ascontiguousarray makes 0-d arrays 1-d)


def _run_into(run: NodeRun, env: dict[str, np.ndarray], out: np.ndarray) -> None:
    """Run a Conv whose result must land in ``out`` (an NHWC block chosen by an executor plan)."""
    run.compute(env, out=out)
    name = run.node.outputs[0]
    if not np.shares_memory(env[name], out):  # a Conv without a channels-last form ignored ``out``
        np.copyto(out, env[name].transpose(0, 2, 3, 1))
        env[name] = out.transpose(0, 3, 1, 2)


class NumpyExecutable(Executable):
    """A graph prepared for the NumPy backend; ``native`` (default: where they are built) uses the C kernels."""

    def __init__(self, graph: Graph, native: bool | None = None):
        self.graph = graph
        self.native = native_kernels.available() if native is None else native and native_kernels.available()
        groups, nodes = plan_concat_groups(graph)
        for group in groups:
            group.native = self.native
        nodes, self._pool_epilogues = plan_pool_epilogues(graph, nodes, groups)
        self._runs = [node_run(node, graph.constants, self.native) for node in nodes]
        self._slot = {i: (g, *g.ranges[i]) for g in groups for i in g.ranges}  # producer -> (group, begin, end)
        self._finish = {g.last: g for g in groups}
        # the native depthwise reads any input and pads on the fly: row-padded buffers only serve the einsum
        row_padded = {} if self.native else plan_row_padded(graph)
        self._row_padded = {i: r for i, r in row_padded.items() if i not in self._slot}
        in_place = {g.output for g in groups}
        self._skipped = {i for i, node in enumerate(graph.nodes) if node.outputs[0] in in_place}
        # Free each intermediate as soon as its last reader has run.
        last_use: dict[str, int] = {}
        for i, node in enumerate(graph.nodes):
            for name in node.inputs:
                if name:
                    last_use[name] = i
        keep = set(graph.outputs) | set(graph.constants)
        self._release = [
            [n for n in node.inputs if n and last_use.get(n) == i and n not in keep]
            for i, node in enumerate(graph.nodes)
        ]

    def plans(self) -> dict[str, int]:
        """How many nodes run with each executor plan (for tests and ``explain``)."""
        groups = set(self._finish.values())
        return {
            "inplace_concats": len(groups),
            "deferred_concat_epilogues": sum(g.deferred for g in groups),
            "row_padded_depthwise": len(self._row_padded) // 2,
            "epilogues_after_max_pool": len(self._pool_epilogues),
            "native_kernels": int(self.native),
        }

    def _run_node(self, i: int, env: dict[str, np.ndarray]) -> None:
        """Run node ``i``; a producer of an in-place Concat writes into its channel range of the output."""
        if i in self._skipped:
            return
        run = self._runs[i]
        slot = self._slot.get(i)
        if i in self._pool_epilogues:
            run.compute(env)
            self._pool_epilogues[i].apply(env[run.node.outputs[0]], self.native)
            return
        if slot is None and i in self._row_padded:
            self._run_row_padded(i, run, env)
            return
        if slot is None:
            run.compute(env)
            return
        group, begin, end = slot
        _run_into(run, env, group.buffer(env)[:, begin:end].transpose(0, 2, 3, 1))
        if i in self._finish:
            self._finish[i].finish(env)

    def _run_row_padded(self, i: int, run: NodeRun, env: dict[str, np.ndarray]) -> None:
        """The producer writes into the depthwise's row-padded buffer, the depthwise reads its taps from it."""
        geometry = self._row_padded[i]
        interior = geometry.interior()
        if run.node.name != geometry.key:  # the producer (the geometry is named after the depthwise)
            _run_into(run, env, interior)
            return
        if np.shares_memory(env[run.node.inputs[0]], interior):
            run.compute(env, row_padded=geometry)
        else:
            run.compute(env)

    def run(
        self, feeds: dict[str, np.ndarray], filled_on_device: frozenset[str] = frozenset()
    ) -> dict[str, np.ndarray]:
        if filled_on_device:  # device_input() is None for every input here
            raise InputError(f"the NumPy backend has no device-side inputs; got {sorted(filled_on_device)}")
        env: dict[str, np.ndarray] = dict(self.graph.constants)
        env.update(feeds)
        for i, release in enumerate(self._release):
            self._run_node(i, env)
            for name in release:
                env.pop(name, None)
        return {name: _c_order(env[name]) for name in self.graph.outputs}

    def profile(self, feeds: dict[str, np.ndarray], repeat: int = 10) -> list[dict[str, Any]]:
        """Per node: median wall time over ``repeat`` runs, achieved GFLOP/s and share of the total."""
        node_flops = self.graph.metadata.get("node_flops", {})
        samples: list[list[float]] = [[] for _ in self.graph.nodes]
        for _ in range(max(repeat, 1)):
            env: dict[str, np.ndarray] = dict(self.graph.constants)
            env.update(feeds)
            for i, (release, times) in enumerate(zip(self._release, samples)):
                t0 = time.perf_counter()
                self._run_node(i, env)
                times.append(time.perf_counter() - t0)
                for name in release:  # as run() does: a run that keeps every intermediate pays page faults
                    env.pop(name, None)
        medians = [float(np.median(t)) for t in samples]
        total = sum(medians) or 1.0
        rows = [
            {"name": n.name, "op": n.op, "kernel": self._kernel(i), "time_ms": t * 1e3,
             "gflops": node_flops.get(n.name, 0) / t / 1e9 if t else 0.0, "share": t / total}
            for i, (n, t) in enumerate(zip(self.graph.nodes, medians))
        ]  # fmt: skip
        return sorted(rows, key=lambda r: -r["time_ms"])

    def _native_declined(self, i: int) -> str | None:
        """Why node ``i`` runs without its native kernel on this CPU (``native_kernels.declines_node``)."""
        if not self.native or self.graph.nodes[i].op not in ("MaxPool", "Conv"):
            return None
        return native_kernels.declines_node(self._runs[i].node, self.graph)

    def _kernel(self, i: int) -> str:
        """``native``: a depthwise conv or a MaxPool in the C kernel; ``numpy+native``: NumPy's sgemm with the
        C im2col (a group-1 conv wider than 1x1) or the C epilogue; ``numpy`` where the backend has no kernel for
        the node or declines it here."""
        node = self.graph.nodes[i]
        if not self.native or node.op not in ("MaxPool", "Conv"):
            return "numpy"
        x, w = (
            self.graph.tensors.get(node.inputs[0]),
            self.graph.constants.get(node.inputs[1] if node.inputs[1:] else ""),
        )
        if x is None or x.dtype != "float32":
            return "numpy"
        declined = self._native_declined(i) is not None
        if node.op == "MaxPool":
            return "numpy" if declined else "native"
        group = int(node.attrs.get("group", 1))
        depthwise = w is not None and len(x.shape) == 4 and group == x.shape[1] == w.shape[0] > 1
        if depthwise:
            return "numpy" if declined else "native"
        if native_kernels.gathers_patches(node, self.graph):
            return "numpy" if declined else "numpy+native"
        run = self._runs[i].node  # (its tail as the executor plans left it)
        tail = len(run.inputs) > 2 and any(run.inputs[2:]) or bool(run.attrs.get("activation"))
        return "numpy+native" if tail and not declined else "numpy"

    def _plan_of(self, i: int) -> dict[str, Any]:
        """What the executor plans do to node ``i`` (empty when it runs as compiled)."""
        plan: dict[str, Any] = {}
        if i in self._skipped:
            plan["computed_in_place_by"] = [self.graph.nodes[j].name for j in self._finish_group_members(i)]
        if i in self._slot:
            group, begin, end = self._slot[i]
            plan["writes_channels_of"] = [group.output, begin, end]
            if self._runs[i].node is not self.graph.nodes[i]:
                plan["epilogue_moved"] = "after the Concat" if group.deferred else "after the MaxPool"
        if i in self._row_padded:
            node = self.graph.nodes[i]
            key = self._row_padded[i].key
            plan["row_padded"] = "reads its producer's buffer" if node.name == key else f"writes the input of {key}"
        declined = self._native_declined(i)
        if declined:
            plan["native_declined"] = f"{native_kernels.isa()} build: {declined}"
        if i in self._pool_epilogues:
            plan["runs_epilogue_of_its_input"] = True
        elif self._runs[i].node is not self.graph.nodes[i] and i not in self._slot:
            plan["epilogue_moved"] = "after the MaxPool"
        return plan

    def _finish_group_members(self, concat_index: int) -> list[int]:
        output = self.graph.nodes[concat_index].outputs[0]
        return sorted(i for i, (g, _, _) in self._slot.items() if g.output == output)

    def explain(self) -> list[dict[str, Any]]:
        """Per node: its kernel (:meth:`_kernel`) and, as its config, what the executor plans do to it."""
        rows = []
        for i, n in enumerate(self.graph.nodes):
            plan = self._plan_of(i)
            rows.append({"name": n.name, "op": n.op, "placement": HOST, "kernel": self._kernel(i), "config": plan,
                         "config_source": "plan" if plan else "-"})  # fmt: skip
        return rows
