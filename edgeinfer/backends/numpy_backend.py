"""The NumPy backend (device name ``"cpu"``): the reference for every other backend and their fallback."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.numpy_concat import plan_concat_groups
from edgeinfer.backends.numpy_pool_epilogue import plan_pool_epilogues
from edgeinfer.backends.numpy_row_padded import plan_row_padded
from edgeinfer.errors import DeviceError
from edgeinfer.ir import Graph, Node
from edgeinfer.ops import get_op, native_kernels

NAME = "cpu"
PURE = "cpu:numpy"  # the pure NumPy paths even where the native kernels are built


def list_devices() -> list[DeviceInfo]:
    if native_kernels.available():
        kernels = f"native kernels, {native_kernels.isa()} build"
    else:
        kernels = f"no native kernels: {native_kernels.status()}"
    return [
        DeviceInfo(backend=NAME, spec=NAME, name=f"NumPy on the host CPU ({kernels})", kind="cpu"),
        DeviceInfo(backend=NAME, spec=PURE, name="NumPy on the host CPU, pure NumPy (no native kernels)", kind="cpu"),
    ]


def run_node(node: Node, env: dict[str, np.ndarray], attrs: dict[str, Any] | None = None) -> None:
    """Run one node with its NumPy implementation, reading inputs from and writing outputs to ``env``.

    ``attrs`` replaces the node's attributes (see :func:`backend_attrs`).
    """
    args = [env[name] if name else None for name in node.inputs]
    results = get_op(node.op).fn(args, node.attrs if attrs is None else attrs)
    for name, value in zip(node.outputs, results):
        if name:
            env[name] = value


def _c_order(x: np.ndarray) -> np.ndarray:
    """``x`` in C order: graph outputs leave the backend as plain arrays, whatever layout produced them."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)  # (ascontiguousarray makes 0-d arrays 1-d)


def backend_attrs(node: Node, constants: dict[str, np.ndarray] | None = None, native: bool = False) -> dict[str, Any]:
    """The attributes this backend runs ``node`` with: Convs compute channels-last (with the ``native``
    kernels of :mod:`edgeinfer.ops.native_kernels` where they apply).

    Channels-last results (``edgeinfer.ops.conv_channels_last``) are NCHW-shaped arrays with NHWC
    strides, so every op still gets ONNX semantics; other callers of the ops (the OpenCL host fallback,
    constant folding) keep plain NCHW arrays. A Conv whose weight and bias are among ``constants`` also
    gets a ``packed_weights`` cache: its weight layouts are then built on the first run only.
    """
    if node.op == "MaxPool" and native:  # (native_cache: the kernel's geometry, kept between runs)
        return {**node.attrs, "native_kernels": True, "native_cache": {}}
    if node.op != "Conv":
        return node.attrs
    attrs = {**node.attrs, "channels_last": True, "native_kernels": native}
    if constants is not None and all(name in constants for name in node.inputs[1:3] if name):
        attrs["packed_weights"] = {}
    return attrs


def _run_into(node: Node, env: dict[str, np.ndarray], attrs: dict[str, Any], out: np.ndarray) -> None:
    """Run a Conv whose result must land in ``out`` (an NHWC block chosen by an executor plan)."""
    run_node(node, env, {**attrs, "out": out})
    result = env[node.outputs[0]]
    if not np.shares_memory(result, out):  # a Conv without a channels-last form ignored ``out``
        np.copyto(out, result.transpose(0, 2, 3, 1))
        env[node.outputs[0]] = out.transpose(0, 3, 1, 2)


class NumpyExecutable:
    """A graph prepared for the NumPy backend; ``native`` (default: where they are built) uses the C kernels."""

    def __init__(self, graph: Graph, native: bool | None = None):
        self.graph = graph
        self.native = native_kernels.available() if native is None else native and native_kernels.available()
        groups, nodes = plan_concat_groups(graph)
        for group in groups:
            group.native = self.native
        self._nodes, self._pool_epilogues = plan_pool_epilogues(graph, nodes, groups)
        self._attrs = [backend_attrs(node, graph.constants, self.native) for node in self._nodes]
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
        node, attrs = self._nodes[i], self._attrs[i]
        slot = self._slot.get(i)
        if i in self._pool_epilogues:
            run_node(node, env, attrs)
            self._pool_epilogues[i].apply(env[node.outputs[0]], self.native)
            return
        if slot is None and i in self._row_padded:
            self._run_row_padded(i, node, attrs, env)
            return
        if slot is None:
            run_node(node, env, attrs)
            return
        group, begin, end = slot
        _run_into(node, env, attrs, group.buffer(env)[:, begin:end].transpose(0, 2, 3, 1))
        if i in self._finish:
            self._finish[i].finish(env)

    def _run_row_padded(self, i: int, node: Node, attrs: dict[str, Any], env: dict[str, np.ndarray]) -> None:
        """The producer writes into the depthwise's row-padded buffer, the depthwise reads its taps from it."""
        geometry = self._row_padded[i]
        interior = geometry.interior()
        if node.name != geometry.key:  # the producer (the geometry is named after the depthwise)
            _run_into(node, env, attrs, interior)
            return
        x = env[node.inputs[0]]
        run_node(node, env, {**attrs, "row_padded": geometry} if np.shares_memory(x, interior) else attrs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        return native_kernels.declines_node(self._nodes[i], self.graph)

    def _kernel(self, i: int) -> str:
        """``native``: a depthwise conv or a MaxPool in the C kernel; ``numpy+native``: NumPy's sgemm with the
        C epilogue; ``numpy`` where the backend has no kernel for the node or declines it here."""
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
        run = self._nodes[i]  # (its tail as the executor plans left it)
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
            if self._nodes[i] is not self.graph.nodes[i]:
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
        elif self._nodes[i] is not self.graph.nodes[i] and i not in self._slot:
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
            rows.append({"name": n.name, "op": n.op, "placement": "cpu", "kernel": self._kernel(i), "config": plan,
                         "config_source": "plan" if plan else "-"})  # fmt: skip
        return rows


def prepare(graph: Graph, device: str | None = None) -> NumpyExecutable:
    """``device`` ``"cpu"`` (native kernels where built) or ``"cpu:numpy"`` (pure NumPy)."""
    if device not in (None, NAME, PURE):
        raise DeviceError(f"unknown NumPy backend device {device!r}; expected {NAME!r} or {PURE!r}")
    return NumpyExecutable(graph, native=False if device == PURE else None)
