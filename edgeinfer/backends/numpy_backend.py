"""The NumPy backend (device name ``"cpu"``): the reference for every other backend and their fallback."""

from __future__ import annotations

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

    def explain(self) -> list[dict[str, Any]]:
        return [
            {"name": n.name, "op": n.op, "placement": "cpu", "kernel": "numpy", "config": {}, "config_source": "-"}
            for n in self.graph.nodes
        ]


def prepare(graph: Graph, device: str | None = None) -> NumpyExecutable:
    return NumpyExecutable(graph)
