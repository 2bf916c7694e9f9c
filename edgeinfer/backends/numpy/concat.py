"""In-place channel Concats for the NumPy backend: the producing Convs write into the Concat's output.

SqueezeNet's fire modules concatenate the outputs of two expand convs (1x1 and 3x3). Computed
separately and then copied, the copy costs ~0.6 ms per run, and each producer's bias and ReLU run on
a channel range of the result, whose short rows (``M`` channels per pixel) make NumPy's inner loops
short. Here each producer's sgemm writes its channel range of one NHWC block and, where every producer
has the same activation, the biases and the activation run once over the whole, contiguous block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeinfer.backends.numpy.conv_channels_last import fused_epilogue
from edgeinfer.ir import Graph, Node


@dataclass(eq=False)
class ConcatGroup:
    """One Concat computed in place: its producers, their channel ranges and the deferred epilogue."""

    output: str
    shape_nhwc: tuple[int, int, int, int]
    ranges: dict[int, tuple[int, int]]  # producer node index -> channel range
    last: int  # index of the producer that runs last
    bias: np.ndarray | None = None  # deferred biases of all producers, None when not deferred
    activation: str | None = None
    activation_params: list[float] | None = field(default=None)
    deferred: bool = False  # finish() runs the producers' biases and activation
    cache: dict = field(default_factory=dict)  # the tiled bias rows
    native: bool = False  # finish() with the native epilogue kernel

    def buffer(self, env: dict[str, np.ndarray]) -> np.ndarray:
        """The Concat output (NCHW view of an NHWC block), allocated by the first producer of a run."""
        whole = env.get(self.output)
        if whole is None:
            whole = env[self.output] = np.empty(self.shape_nhwc, np.float32).transpose(0, 3, 1, 2)
        return whole

    def finish(self, env: dict[str, np.ndarray]) -> None:
        """After the last producer: the deferred biases and activation over the whole block."""
        if not self.deferred:
            return
        n, h, w, c = self.shape_nhwc
        block = env[self.output].transpose(0, 2, 3, 1).reshape((n * h * w, c), copy=False)
        fused_epilogue(block, self.bias, None, self.activation, self.activation_params, self.cache, self.native)


def plan_concat_groups(graph: Graph) -> tuple[list[ConcatGroup], list[Node]]:
    """Concats along channels of float32 4-D Conv outputs that nothing else reads, computed in place.

    Returns the groups and the nodes to run: a producer of a deferred group runs without its bias and
    activation (they move to :meth:`ConcatGroup.finish`). Deferral needs constant biases, no fused
    residual and one activation for all producers.
    """
    producer = {out: i for i, node in enumerate(graph.nodes) for out in node.outputs if out}
    readers = graph.consumers()
    nodes = list(graph.nodes)
    groups: list[ConcatGroup] = []
    for node in graph.nodes:
        info = graph.tensors.get(node.outputs[0]) if node.op == "Concat" else None
        if info is None or info.dynamic or len(info.shape) != 4 or info.dtype != "float32":
            continue
        inputs = [name for name in node.inputs if name]
        if int(node.attrs.get("axis", 0)) % 4 != 1 or len(set(inputs)) != len(inputs):
            continue
        if not all(
            name in producer
            and graph.nodes[producer[name]].op == "Conv"
            and len(readers.get(name, [])) == 1
            and name not in graph.outputs
            and graph.tensors[name].shape[0] == info.shape[0]
            for name in inputs
        ):
            continue
        members = [producer[name] for name in inputs]
        bounds = np.cumsum([0] + [graph.tensors[name].shape[1] for name in inputs])
        n, _, h, w = info.shape
        group = ConcatGroup(
            node.outputs[0],
            (n, h, w, info.shape[1]),
            {i: (int(bounds[k]), int(bounds[k + 1])) for k, i in enumerate(members)},
            max(members),
        )
        convs = [graph.nodes[i] for i in members]
        acts = {(c.attrs.get("activation"), tuple(c.attrs.get("activation_params") or ())) for c in convs}
        biases_constant = all(len(c.inputs) < 3 or not c.inputs[2] or c.inputs[2] in graph.constants for c in convs)
        no_residual = all(len(c.inputs) < 4 or not c.inputs[3] for c in convs)
        if len(acts) == 1 and biases_constant and no_residual:
            bias = np.zeros(info.shape[1], np.float32)
            for c, i in zip(convs, members):
                if len(c.inputs) > 2 and c.inputs[2]:
                    bias[slice(*group.ranges[i])] = graph.constants[c.inputs[2]]
                attrs = {k: v for k, v in c.attrs.items() if k not in ("activation", "activation_params")}
                nodes[i] = Node(c.name, c.op, c.inputs[:2], c.outputs, attrs, c.placement)
            group.bias = bias if bias.any() else None
            group.activation, group.activation_params = (
                convs[0].attrs.get("activation"),
                convs[0].attrs.get("activation_params"),
            )
            group.deferred = True
        groups.append(group)
    return groups, nodes
