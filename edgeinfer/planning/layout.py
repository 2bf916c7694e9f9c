"""The channel-blocked layout NCHWxc on CPU devices (kernels/opencl/blocked.cl).

A blocked tensor [N][C][H][W] is stored as [N][ceil(C/B)][H][W][B]: one pixel's B channels of one block are one
vector of B floats. On CPU devices (PoCL) convolutions on it are much faster than on NCHW (aligned depthwise
taps, broadcast-times-vector GEMMs); on GPUs NCHW kernels already coalesce, so the layout is off there.

The block B follows the device's vector ISA (:func:`block_for`): 16 on AVX-512, 8 on AVX2, 4 on SSE and NEON, so
that one block is one vector register (a 16-wide block takes two AVX2 registers per accumulator, which halves the
register tiles that fit: blocked.registers_needed; docs/notes-opencl.md, session 8).

At load time :func:`apply` rewrites a copy of the pack's graph: chosen Conv nodes (and the elementwise nodes
between them) read and write blocked tensors, named ``<tensor>#nchw<B>c`` with 5-D shapes, and conversion nodes
(``ToBlocked`` / ``FromBlocked``) sit where a blocked region meets plain readers or writers. The memory plan is
recomputed for the new sizes. A blocked node carries the attribute ``LAYOUT_ATTR``; if no kernel takes it,
:func:`run_host` runs it on the NumPy backend through plain copies of its tensors, so results never depend on
which nodes got kernels.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeinfer.activations import BY_NAME
from edgeinfer.backends.numpy import run_node
from edgeinfer.cpu_isa import IsaClass
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.passes.memory_plan import plan_memory

BLOCKS = (4, 8, 16)  # the channel blocks blocked.cl compiles for (its BLOCK define)
# The block per ISA class: one block per vector register. Measured (benchmarks/RESULTS.md 1k, defaults, no table):
# on AVX-512 block 16 beat 8 on MobileNetV2, SqueezeNet and YOLOX-nano (a disturbed run); on the AVX2 stand-in
# 8 and 16 (each with tiles fitted to 16 ymm registers) were within noise (8 ahead on two models, 16 on SqueezeNet).
BLOCK_BY_ISA = {"avx512": 16, "avx2": 8, "avx": 8, "sse": 4, "neon": 4, "simt": 16}
# On a blocked node: {"inputs": [whether each input is read blocked], "channels": [its channel count, else 0],
# "block": B}, plus "plain_output": True on a node that writes its output plain (is_global_pool).
LAYOUT_ATTR = "_blocked"
TO_BLOCKED, FROM_BLOCKED = "ToBlocked", "FromBlocked"  # attrs: "block" (to), "channels" (from)
# A blocked depthwise Conv and the blocked 1x1 Conv that alone reads it, as one node (blocked.cl conv_sep_blocked).
# Inputs: X, depthwise W and B, pointwise W and B, Z; attrs: each part's name and attributes.
SEPARABLE = "SeparableConvBlocked"
# Fuse a pair only if the 1x1 conv has at most this many output blocks: each group of NB output blocks recomputes
# the depthwise part, which stops paying for wide outputs. Measured at block 16 (4 blocks, 64 channels) and at
# block 8 on AVX2, where 8 blocks (the old limit of 64 channels) cost MobileNetV2 4% and YOLOX-nano 11%
# (RESULTS 1m): AVX2's register budget allows only NB <= 2, so 8 blocks meant four depthwise passes.
SEPARABLE_MAX_BLOCKS = 4
# Overrides the per-device choice: "nchw" (plain), "blocked" (the device's block), "nchw4c", "nchw8c", "nchw16c".
LAYOUT_ENV = "EDGEINFER_OPENCL_LAYOUT"

# Same-shape elementwise ops that may run on blocked tensors unchanged (lane by lane; the padding lanes stay
# finite because these ops map finite values to finite values).
ELEMENTWISE_OPS = frozenset(
    {"Add", "Sub", "Mul", "Max", "Min", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish"}
)


def _forced() -> str:
    value = os.environ.get(LAYOUT_ENV, "")
    allowed = ("nchw", "blocked", *(f"nchw{block}c" for block in BLOCKS))
    if value and value not in allowed:
        raise ValueError(f"{LAYOUT_ENV}={value!r}: expected one of {', '.join(allowed)}")
    return value


def wanted(device_kind: str) -> bool:
    """Whether graphs on a device of ``device_kind`` use the blocked layout: CPU devices (``EDGEINFER_OPENCL_LAYOUT``
    overrides)."""
    value = _forced()
    return device_kind == "cpu" if value == "" else value != "nchw"


def block_for(device_kind: str, isa: IsaClass) -> int:
    """The channel block of graphs on a device of ``device_kind`` compiling for ``isa`` (BLOCK_BY_ISA); 0 where the
    layout is off. ``EDGEINFER_OPENCL_LAYOUT=nchw<B>c`` forces block B (experiments, tests)."""
    if not wanted(device_kind):
        return 0
    value = _forced()
    if value.startswith("nchw") and value != "nchw":
        return int(value[4:-1])
    return BLOCK_BY_ISA.get(isa.name, 16)


def for_device(graph: Graph, device_kind: str, isa: IsaClass) -> Graph:
    """``graph`` as the executor runs it on such a device: blocked (:func:`apply`) with the device's block, or as
    it is where the layout is off."""
    block = block_for(device_kind, isa)
    return apply(graph, block) if block else graph


def blocks(channels: int, block: int) -> int:
    """Channel blocks of ``channels`` channels (the last one padded)."""
    return -(-channels // block)


def blocked_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    n, c, h, w = shape
    return (n, blocks(c, block), h, w, block)


def to_blocked(x: np.ndarray, block: int) -> np.ndarray:
    """NCHW -> NCHW<block>c, the padding channels zero."""
    n, c, h, w = x.shape
    padded = np.zeros((n, blocks(c, block) * block, h, w), x.dtype)
    padded[:, :c] = x
    return np.ascontiguousarray(padded.reshape(n, -1, block, h, w).transpose(0, 1, 3, 4, 2))


def from_blocked(x: np.ndarray, channels: int) -> np.ndarray:
    """NCHW<B>c -> NCHW with ``channels`` channels (B is the last axis)."""
    n, cb, h, w, block = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, cb * block, h, w)[:, :channels])


def conv_kind(node: Node, graph: Graph) -> str | None:
    """Which blocked.cl kernel ("pointwise", "depthwise" or "direct") computes this Conv, if one does."""
    if node.op != "Conv" or len(node.inputs) < 2 or LAYOUT_ATTR in node.attrs:
        return None
    x, w = node.inputs[0], node.inputs[1]
    weights = graph.constants.get(w)
    info = graph.tensors.get(x)
    out = graph.tensors.get(node.outputs[0])
    if weights is None or info is None or out is None or info.dynamic or weights.ndim != 4 or len(info.shape) != 4:
        return None
    if info.dtype != "float32" or out.dtype != "float32" or weights.dtype != np.float32:
        return None
    if any(name and name not in graph.constants for name in node.inputs[2:3]):
        return None  # a computed bias
    return kernel_kind(weights, node.attrs)


def kernel_kind(weights: np.ndarray, attrs: dict[str, Any]) -> str | None:
    """The blocked kernel family of a Conv, from its 4-D weights and attributes: "pointwise" (1x1, stride 1, no
    padding), "direct" (group 1) or "depthwise" (one filter per channel); None for other grouped convolutions."""
    groups = int(attrs.get("group", 1))
    if groups == 1:
        pointwise = weights.shape[2:] == (1, 1) and attrs.get("strides", [1, 1]) == [1, 1]
        return "pointwise" if pointwise and not any(attrs.get("pads", [0, 0, 0, 0])) else "direct"
    if weights.shape[1] == 1 and groups == weights.shape[0]:
        return "depthwise"
    return None


def _elementwise(node: Node, graph: Graph) -> bool:
    """A same-shape elementwise node: tensor inputs shaped like the output, constants scalars."""
    if node.op not in ELEMENTWISE_OPS or len(node.outputs) != 1:
        return False
    out = graph.tensors[node.outputs[0]]
    if out.dtype != "float32" or len(out.shape) != 4 or out.dynamic:
        return False
    for name in node.inputs:
        if not name:
            continue
        if name in graph.constants:
            if graph.constants[name].size != 1:
                return False
        elif graph.tensors[name].shape != out.shape or graph.tensors[name].dtype != "float32":
            return False
    return True


NEAREST_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
NEAREST_ROUNDING = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _joins_blocked_region(node: Node, graph: Graph, block: int) -> bool:
    """Whether blocked.cl (or an ordinary kernel, lane by lane) computes ``node`` on blocked inputs: the same-
    shape elementwise ops, MaxPool, nearest Resize of the spatial axes, and Concat of channels where every
    input but the last fills whole blocks (so the inputs' blocks, one after another, are the output's)."""
    if _elementwise(node, graph):
        return True
    out = graph.tensors.get(node.outputs[0]) if node.outputs else None
    x = graph.tensors.get(node.inputs[0]) if node.inputs and node.inputs[0] else None
    if out is None or x is None or len(out.shape) != 4 or len(x.shape) != 4 or out.dtype != "float32":
        return False
    if node.op == "MaxPool":
        return len(node.outputs) == 1 or not node.outputs[1]
    if node.op == "Resize":
        attrs = node.attrs
        return (
            attrs.get("mode", "nearest") == "nearest"
            and not attrs.get("axes")
            and attrs.get("coordinate_transformation_mode", "half_pixel") in NEAREST_MODES
            and attrs.get("nearest_mode", "round_prefer_floor") in NEAREST_ROUNDING
            and x.shape[:2] == out.shape[:2]
            and attrs.get("keep_aspect_ratio_policy", "stretch") == "stretch"
        )
    if node.op == "Concat":
        if int(node.attrs.get("axis", 0)) % 4 != 1 or any(not name or name in graph.constants for name in node.inputs):
            return False
        return all(graph.tensors[name].shape[1] % block == 0 for name in node.inputs[:-1])
    return False


def is_global_pool(node: Node, graph: Graph) -> bool:
    """A pool of whole planes (output 1x1): it reads a blocked tensor and writes its plain output directly (for
    1x1 planes NCHW is the blocked layout without the padding lanes), so no conversion of the large input is needed."""
    if node.op in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    if node.op not in ("AveragePool", "MaxPool") or (len(node.outputs) > 1 and node.outputs[1]):
        return False
    x, y = graph.tensors.get(node.inputs[0]), graph.tensors.get(node.outputs[0])
    if x is None or y is None or len(x.shape) != 4 or x.dynamic:
        return False
    return (list(node.attrs.get("kernel_shape", [])) == list(x.shape[2:]) and tuple(y.shape[2:]) == (1, 1)
            and not any(node.attrs.get("pads", [0, 0, 0, 0])))  # fmt: skip


def choose_blocked(graph: Graph, block: int) -> dict[str, list[bool]]:
    """Blocked nodes -> for each input, whether it is read blocked. Tensors are blocked where their producer is.

    Convolutions write blocked outputs; a pointwise or direct conv reads a plain X as it is (the stem reads the
    image), a depthwise conv needs a blocked X; Z is read blocked. Other nodes join when all their tensor inputs
    are blocked and a kernel takes them blocked (_joins_blocked_region). A conv whose X does not come from a
    blocked node and whose output no blocked node reads stays plain: blocking it would only add conversions."""
    blocked_nodes: dict[str, list[bool]] = {}
    blocked_tensors: set[str] = set()
    convs_fed_plain: list[Node] = []
    for node in graph.nodes:
        kind = conv_kind(node, graph)
        tensor_inputs = [name for name in node.inputs if name and name not in graph.constants]
        if kind is not None:
            reads = [False] * len(node.inputs)
            reads[0] = kind == "depthwise" or node.inputs[0] in blocked_tensors
            if len(node.inputs) > 3 and node.inputs[3]:
                reads[3] = True
            if node.inputs[0] not in blocked_tensors:
                convs_fed_plain.append(node)
        elif tensor_inputs and all(name in blocked_tensors for name in tensor_inputs) and is_global_pool(node, graph):
            blocked_nodes[node.name] = [True]  # its output stays plain
            continue
        elif (tensor_inputs and all(name in blocked_tensors for name in tensor_inputs)
              and _joins_blocked_region(node, graph, block)):  # fmt: skip
            reads = [bool(name) and name not in graph.constants for name in node.inputs]
        else:
            continue
        blocked_nodes[node.name] = reads
        blocked_tensors.add(node.outputs[0])
    consumers = graph.consumers()
    for node in reversed(convs_fed_plain):  # last first, so that a chain of isolated convs unravels
        out = node.outputs[0]
        if not any(flag and name == out for reader in consumers.get(out, []) if reader.name in blocked_nodes
                   for flag, name in zip(blocked_nodes[reader.name], reader.inputs)):  # fmt: skip
            del blocked_nodes[node.name]
    return blocked_nodes


def apply(graph: Graph, block: int = 16) -> Graph:
    """A copy of ``graph`` with the blocked nodes and conversions (channel block ``block``: block_for's), its memory
    plan recomputed; ``graph`` itself if no node is worth blocking. The pack's graph is not changed."""
    if block not in BLOCKS:
        raise ValueError(f"channel block {block}: expected one of {BLOCKS}")
    blocked_nodes = choose_blocked(graph, block)
    if not blocked_nodes:
        return graph
    tensors = dict(graph.tensors)
    nodes: list[Node] = []
    blocked_name: dict[str, str] = {}  # tensor -> its blocked version, once one exists (or will: outputs)
    plain: set[str] = set(graph.inputs) | set(graph.constants)  # tensors whose plain version exists

    def add_blocked(name: str) -> str:
        blocked_name[name] = f"{name}#nchw{block}c"
        shape = blocked_shape(graph.tensors[name].shape, block)
        tensors[blocked_name[name]] = TensorInfo(blocked_name[name], shape, "float32")
        return blocked_name[name]

    def read_blocked(name: str) -> str:
        if name not in blocked_name:  # a plain tensor read blocked: convert it once
            nodes.append(Node(f"{name}::to_nchw{block}c", TO_BLOCKED, [name], [add_blocked(name)], {"block": block}))
        return blocked_name[name]

    def read_plain(name: str) -> str:
        if name and name not in plain:  # a blocked tensor read plain: convert it back once
            channels = graph.tensors[name].shape[1]
            nodes.append(Node(f"{name}::to_nchw", FROM_BLOCKED, [blocked_name[name]], [name], {"channels": channels}))
            plain.add(name)
        return name

    for node in graph.nodes:
        reads = blocked_nodes.get(node.name)
        if reads is None:
            inputs = [read_plain(name) for name in node.inputs]
            nodes.append(Node(node.name, node.op, inputs, list(node.outputs), dict(node.attrs), node.placement))
            plain.update(node.outputs)
            continue
        inputs = [read_blocked(name) if flag else read_plain(name) for name, flag in zip(node.inputs, reads)]
        channels = [graph.tensors[name].shape[1] if flag else 0 for name, flag in zip(node.inputs, reads)]
        if is_global_pool(node, graph):  # blocked in, plain out
            attrs = {**node.attrs, LAYOUT_ATTR: {"inputs": reads, "channels": channels, "block": block,
                                                 "plain_output": True}}  # fmt: skip
            nodes.append(Node(node.name, node.op, inputs, list(node.outputs), attrs, node.placement))
            plain.update(node.outputs)
            continue
        attrs = {**node.attrs, LAYOUT_ATTR: {"inputs": reads, "channels": channels, "block": block}}
        nodes.append(Node(node.name, node.op, inputs, [add_blocked(node.outputs[0])], attrs, node.placement))
    for name in graph.outputs:
        read_plain(name)
    nodes = fuse_separable(nodes, graph, block)
    used = {name for node in nodes for name in [*node.inputs, *node.outputs] if name}
    used |= set(graph.inputs) | set(graph.outputs)
    metadata = dict(graph.metadata)
    flops = metadata.get("node_flops", {})
    metadata["node_flops"] = {**flops, **{node.name: sum(flops.get(part.name, 0) for part in separable_parts(node))
                                          for node in nodes if node.op == SEPARABLE}}  # fmt: skip
    result = Graph(nodes, list(graph.inputs), list(graph.outputs), {k: v for k, v in tensors.items() if k in used},
                   graph.constants, metadata)  # fmt: skip
    plan_memory(result, graph.memory_plan.alignment)
    return result


def _finite_at_zero(activation: str | None) -> bool:
    """The fused separable kernel feeds all lanes of a depthwise block to the 1x1 conv; padded lanes hold act(0)
    and meet zero weights, which gives 0 unless act(0) is infinite."""
    return not activation or BY_NAME[activation].finite_at_zero


def fuse_separable(nodes: list[Node], graph: Graph, block: int) -> list[Node]:
    """``nodes`` (the blocked graph's) with each blocked depthwise Conv whose output only a blocked 1x1 Conv of at
    most SEPARABLE_MAX_BLOCKS output channel blocks reads merged into that conv: one SEPARABLE
    node at the 1x1 conv's place, the depthwise output gone from the graph. (A blocked tensor that is a graph output
    has a second reader, its conversion back to NCHW, so it is never fused away.)"""
    producers = {node.outputs[0]: node for node in nodes if node.outputs}
    readers: dict[str, int] = {}
    for node in nodes:
        for name in set(node.inputs):
            readers[name] = readers.get(name, 0) + 1
    fused: dict[str, Node] = {}  # pointwise node name -> its SEPARABLE node
    absorbed: set[str] = set()  # depthwise node names
    for node in nodes:
        if node.op != "Conv" or LAYOUT_ATTR not in node.attrs or not node.attrs[LAYOUT_ATTR]["inputs"][0]:
            continue
        weights = graph.constants[node.inputs[1]]
        dw = producers.get(node.inputs[0])
        if (kernel_kind(weights, node.attrs) != "pointwise"
                or blocks(weights.shape[0], block) > SEPARABLE_MAX_BLOCKS
                or dw is None or dw.op != "Conv" or LAYOUT_ATTR not in dw.attrs or readers[dw.outputs[0]] != 1
                or (len(dw.inputs) > 3 and dw.inputs[3])
                or kernel_kind(graph.constants[dw.inputs[1]], dw.attrs) != "depthwise"
                or not _finite_at_zero(dw.attrs.get("activation"))):  # fmt: skip
            continue
        pad = [""] * (4 - len(node.inputs))
        _, w_pw, b_pw, z = [*node.inputs, *pad]
        x, w_dw, b_dw = [*dw.inputs, "", ""][:3]
        channels = dw.attrs[LAYOUT_ATTR]["channels"][0]
        z_channels = node.attrs[LAYOUT_ATTR]["channels"][3] if z else 0
        attrs = {
            "depthwise": {"name": dw.name, "output": dw.outputs[0], "attrs": dict(dw.attrs)},
            "pointwise": {"name": node.name, "attrs": dict(node.attrs)},
            LAYOUT_ATTR: {"inputs": [True, False, False, False, False, bool(z)],
                          "channels": [channels, 0, 0, 0, 0, z_channels], "block": block},
        }  # fmt: skip
        fused[node.name] = Node(f"{dw.name}+{node.name}", SEPARABLE, [x, w_dw, b_dw, w_pw, b_pw, z],
                                list(node.outputs), attrs, node.placement)  # fmt: skip
        absorbed.add(dw.name)
    return [fused.get(node.name, node) for node in nodes if node.name not in absorbed]


def separable_parts(node: Node) -> tuple[Node, Node]:
    """The blocked depthwise and 1x1 Conv nodes a SEPARABLE node stands for."""
    x, w_dw, b_dw, w_pw, b_pw, z = node.inputs
    dw, pw = node.attrs["depthwise"], node.attrs["pointwise"]

    def trimmed(names: list[str]) -> list[str]:  # without trailing absent inputs, as the Conv had them
        while not names[-1]:
            names = names[:-1]
        return names

    depthwise = Node(dw["name"], "Conv", trimmed([x, w_dw, b_dw]), [dw["output"]], dict(dw["attrs"]), node.placement)
    pointwise = Node(pw["name"], "Conv", trimmed([dw["output"], w_pw, b_pw, z]), list(node.outputs),
                     dict(pw["attrs"]), node.placement)  # fmt: skip
    return depthwise, pointwise


def run_host(node: Node, env: dict[str, np.ndarray]) -> None:
    """Run ``node`` on the NumPy backend: the conversions directly, a blocked node through plain copies of its
    blocked inputs and a blocked copy of its output."""
    if node.op == TO_BLOCKED:
        env[node.outputs[0]] = to_blocked(env[node.inputs[0]], int(node.attrs["block"]))
        return
    if node.op == FROM_BLOCKED:
        env[node.outputs[0]] = from_blocked(env[node.inputs[0]], int(node.attrs["channels"]))
        return
    if node.op == SEPARABLE:
        for part in separable_parts(node):
            run_host(part, env)
        env.pop(node.attrs["depthwise"]["output"])
        return
    layout: dict[str, Any] | None = node.attrs.get(LAYOUT_ATTR)
    if layout is None:
        run_node(node, env)
        return
    local = dict(env)
    inputs = []
    for name, flag, channels in zip(node.inputs, layout["inputs"], layout["channels"]):
        if flag:
            local[name + "@plain"] = from_blocked(env[name], channels)
            name = name + "@plain"
        inputs.append(name)
    attrs = {k: v for k, v in node.attrs.items() if k != LAYOUT_ATTR}
    out = node.outputs[0]
    run_node(Node(node.name, node.op, inputs, [out + "@plain"], attrs), local)
    plain = local[out + "@plain"]
    env[out] = plain if layout.get("plain_output") else to_blocked(plain, int(layout["block"]))
