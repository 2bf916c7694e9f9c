"""The NumPy backend (device name ``"cpu"``): the reference for every other backend and their fallback."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.ir import Graph, Node
from edgeinfer.ops import get_op

NAME = "cpu"


def list_devices() -> list[DeviceInfo]:
    return [DeviceInfo(backend=NAME, spec=NAME, name="NumPy on the host CPU", kind="cpu")]


def run_node(node: Node, env: dict[str, np.ndarray]) -> None:
    """Run one node with its NumPy implementation, reading inputs from and writing outputs to ``env``."""
    args = [env[name] if name else None for name in node.inputs]
    results = get_op(node.op).fn(args, node.attrs)
    for name, value in zip(node.outputs, results):
        if name:
            env[name] = value


class NumpyExecutable:
    def __init__(self, graph: Graph):
        self.graph = graph
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(self.graph.constants)
        env.update(feeds)
        for node, release in zip(self.graph.nodes, self._release):
            run_node(node, env)
            for name in release:
                env.pop(name, None)
        return {name: env[name] for name in self.graph.outputs}

    def profile(self, feeds: dict[str, np.ndarray], repeat: int = 10) -> list[dict[str, Any]]:
        """Per node: median wall time over ``repeat`` runs, achieved GFLOP/s and share of the total."""
        node_flops = self.graph.metadata.get("node_flops", {})
        samples: list[list[float]] = [[] for _ in self.graph.nodes]
        for _ in range(max(repeat, 1)):
            env: dict[str, np.ndarray] = dict(self.graph.constants)
            env.update(feeds)
            for node, times in zip(self.graph.nodes, samples):
                t0 = time.perf_counter()
                run_node(node, env)
                times.append(time.perf_counter() - t0)
        medians = [float(np.median(t)) for t in samples]
        total = sum(medians) or 1.0
        rows = [
            {"name": n.name, "op": n.op, "kernel": "numpy", "time_ms": t * 1e3,
             "gflops": node_flops.get(n.name, 0) / t / 1e9 if t else 0.0, "share": t / total}
            for n, t in zip(self.graph.nodes, medians)
        ]  # fmt: skip
        return sorted(rows, key=lambda r: -r["time_ms"])

    def explain(self) -> list[dict[str, Any]]:
        return [
            {"name": n.name, "op": n.op, "placement": "cpu", "kernel": "numpy", "config": {}, "config_source": "-"}
            for n in self.graph.nodes
        ]


def prepare(graph: Graph, device: str | None = None) -> NumpyExecutable:
    return NumpyExecutable(graph)
