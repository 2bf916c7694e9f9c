"""Biases and activations moved past the MaxPool that reads their result (NumPy backend).

``max`` over a window commutes with adding a per-channel constant and with every non-decreasing
activation (ReLU, Clip, Sigmoid, Tanh, LeakyReLU and HardSigmoid with a slope >= 0: ``non_decreasing`` in
edgeinfer/activations.py), and MaxPool's
padding never wins a maximum. So a Conv's activation, or an in-place Concat's deferred biases and
activation, can run on the pool's output, which a 3x3 stride-2 pool makes 4x smaller: SqueezeNet's stem
and its first two fire blocks end in such pools. Moving an activation changes no bit; a moved bias is
added after the sgemm instead of inside it, which rounds differently (about an ulp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinfer.activations import is_non_decreasing
from edgeinfer.backends.numpy.concat import ConcatGroup
from edgeinfer.backends.numpy.conv_channels_last import fused_epilogue
from edgeinfer.backends.numpy.layout import is_channels_last
from edgeinfer.ir import Graph, Node
from edgeinfer.ops.activations import apply_activation


@dataclass(eq=False)
class PoolEpilogue:
    """What runs on the pool's output: a per-channel bias (or None) and an activation (or None)."""

    bias: np.ndarray | None
    activation: str | None
    activation_params: list[float] | None

    def apply(self, y: np.ndarray, native: bool = False) -> None:
        """In place on the pool output ``y`` (N, C, H, W) of any layout; ``native``: the C epilogue kernel."""
        if is_channels_last(y):
            n, c, h, w = y.shape
            y2 = y.transpose(0, 2, 3, 1).reshape((n * h * w, c), copy=False)
            fused_epilogue(y2, self.bias, None, self.activation, self.activation_params, None, native)
            return
        if self.bias is not None:
            np.add(y, self.bias[:, None, None], out=y)
        if self.activation:
            apply_activation(y, self.activation, self.activation_params, out=y)


def _single_max_pool_reader(graph: Graph, readers: dict[str, list[Node]], name: str) -> int | None:
    """The index of the one node reading ``name`` if it is a plain MaxPool (no Indices output)."""
    users = readers.get(name, [])
    if len(users) != 1 or name in graph.outputs:
        return None
    pool = users[0]
    if pool.op != "MaxPool" or pool.inputs[0] != name or (len(pool.outputs) > 1 and pool.outputs[1]):
        return None
    info = graph.tensors.get(name)
    if info is None or len(info.shape) != 4 or info.dynamic:
        return None
    return next(i for i, node in enumerate(graph.nodes) if node is pool)


def plan_pool_epilogues(
    graph: Graph, nodes: list[Node], groups: list[ConcatGroup]
) -> tuple[list[Node], dict[int, PoolEpilogue]]:
    """Move epilogues past single-reader MaxPools; returns the nodes to run and the epilogues by pool index.

    A deferred Concat group's epilogue moves whole (its ``finish`` then has nothing to do); a Conv without
    a residual input loses only its fused activation (its bias stays in its sgemm).
    """
    readers = graph.consumers()
    nodes = list(nodes)
    epilogues: dict[int, PoolEpilogue] = {}
    for group in groups:
        pool = _single_max_pool_reader(graph, readers, group.output)
        if group.deferred and pool is not None and is_non_decreasing(group.activation, group.activation_params):
            epilogues[pool] = PoolEpilogue(group.bias, group.activation, group.activation_params)
            group.deferred = False
    for i, node in enumerate(graph.nodes):
        if node.op != "Conv" or nodes[i] is not node or (len(node.inputs) > 3 and node.inputs[3]):
            continue
        act, params = node.attrs.get("activation"), node.attrs.get("activation_params")
        pool = _single_max_pool_reader(graph, readers, node.outputs[0])
        if not act or pool is None or pool in epilogues or not is_non_decreasing(act, params):
            continue
        attrs = {k: v for k, v in node.attrs.items() if k not in ("activation", "activation_params")}
        nodes[i] = Node(node.name, node.op, node.inputs, node.outputs, attrs, node.placement)
        epilogues[pool] = PoolEpilogue(None, act, params)
    return nodes, epilogues
