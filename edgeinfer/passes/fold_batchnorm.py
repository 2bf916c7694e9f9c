"""BatchNormalization (inference mode) disappears from the graph.

``y = (x - mean) / sqrt(var + eps) * scale + bias`` is the per-channel affine map ``y = x * s + t``.
When ``x`` is the output of a Conv with constant weights that nothing else reads, the map folds into
the Conv's weights and bias (no run-time cost). Otherwise it becomes ``Mul(x, s) → Add(·, t)`` with
constants shaped ``[C, 1, ..., 1]`` to broadcast over channel axis 1, so a lone BatchNormalization
(e.g. ONNX's own BatchNormalization test cases) still runs.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.errors import CompileError
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.passes import add_constant, fresh_name


def fold_batchnorm(graph: Graph, into_conv: bool = True) -> int:
    """Rewrite every BatchNormalization; return how many were folded into a Conv."""
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        scale, shift = _affine(bn, graph)
        conv = _foldable_conv(bn, graph) if into_conv else None
        if conv is not None:
            _fold_into_conv(conv, bn, scale, shift, graph)
            folded += 1
        else:
            _to_mul_add(bn, scale, shift, graph)
    return folded


def _affine(bn: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, t) with y = x * s + t, computed in float64 then cast to the data dtype."""
    names = bn.inputs[1:5]
    missing = [n for n in names if n not in graph.constants]
    if missing:
        raise CompileError(
            f"BatchNormalization node {bn.name!r}: scale/bias/mean/var must be constants, "
            f"{missing} are computed at run time"
        )
    gamma, beta, mean, var = (graph.constants[n].astype(np.float64) for n in names)
    s = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    return s, beta - mean * s


def _foldable_conv(bn: Node, graph: Graph) -> Node | None:
    """The Conv producing the BN input, if its weights are constant and only the BN reads its output."""
    producer = graph.producers().get(bn.inputs[0])
    if producer is None or producer.op != "Conv" or "activation" in producer.attrs or len(producer.inputs) > 3:
        return None
    if len(graph.consumers().get(bn.inputs[0], [])) != 1 or bn.inputs[0] in graph.outputs:
        return None
    bias = producer.inputs[2] if len(producer.inputs) > 2 else ""
    if producer.inputs[1] not in graph.constants or (bias and bias not in graph.constants):
        return None
    return producer


def _fold_into_conv(conv: Node, bn: Node, s: np.ndarray, t: np.ndarray, graph: Graph) -> None:
    w = graph.constants[conv.inputs[1]]
    bias = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else ""
    b = graph.constants[bias].astype(np.float64) if bias else np.zeros(w.shape[0])
    new_w = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = (b * s + t).astype(w.dtype)
    w_name = add_constant(graph, f"{conv.name}/W_bn", new_w)
    b_name = add_constant(graph, f"{conv.name}/B_bn", new_b)
    old_out = conv.outputs[0]
    conv.inputs = [conv.inputs[0], w_name, b_name]
    conv.outputs = [bn.outputs[0]]
    graph.nodes.remove(bn)
    graph.tensors.pop(old_out, None)


def _to_mul_add(bn: Node, s: np.ndarray, t: np.ndarray, graph: Graph) -> None:
    x = graph.tensors[bn.inputs[0]]
    shape = (-1,) + (1,) * max(len(x.shape) - 2, 0)
    s_name = add_constant(graph, f"{bn.name}/scale", s.astype(x.dtype).reshape(shape))
    t_name = add_constant(graph, f"{bn.name}/shift", t.astype(x.dtype).reshape(shape))
    mid = fresh_name(graph, f"{bn.name}/scaled")
    graph.tensors[mid] = TensorInfo(mid, x.shape, x.dtype, x.dynamic)
    index = graph.nodes.index(bn)
    graph.nodes[index : index + 1] = [
        Node(f"{bn.name}/mul", "Mul", [bn.inputs[0], s_name], [mid], placement=bn.placement),
        Node(f"{bn.name}/add", "Add", [mid, t_name], [bn.outputs[0]], placement=bn.placement),
    ]
