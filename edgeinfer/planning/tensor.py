"""Kernel planners for pooling, element-wise ops, data movement, resize, softmax and (de)quantisation.

These ops are memory-bound; their configs are fixed heuristics (no tuned knobs beyond the work-group size).
"""

from __future__ import annotations

import math

import numpy as np

from edgeinfer.activations import BY_ONNX_OP, CODES
from edgeinfer.ir import Node
from edgeinfer.planning.context import GUARD_BYTES, PlanContext, f32, i32, local_size
from edgeinfer.planning.half_storage import HALF_BITS
from edgeinfer.planning.plan import BufferCopy, GuardedTensorArg, KernelPlan, Launch, NoKernel, TensorArg
from edgeinfer.planning.registry import kernel_for

MAX_RANK = 6
ELEMENT_TYPES = {"float32": "float", "uint8": "uchar", "int8": "char", "int32": "int", "int64": "long"}
LINEAR_LOCAL = 64  # work-items per group of the 1-D kernels
COPY_CHUNK = 16  # elements per work-item of strided_copy (tensor.cl)


def operand(ctx: PlanContext, name: str):
    """A kernel argument for an input: the uploaded constant, or the device tensor."""
    value = ctx.constant(name)
    return value if value is not None else TensorArg(name)


def linear_launch(template: str, kernel: str, args: list, count: int, defines: dict | None = None) -> Launch:
    return Launch(template, kernel, args, (count,), (min(LINEAR_LOCAL, max(count, 1)),), defines or {})


def plan(template: str, launches: list, **config) -> KernelPlan:
    return KernelPlan(template, config, "default", launches)


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return strides


def padded(values: list[int], fill: int) -> list[int]:
    """Right-align ``values`` in MAX_RANK slots."""
    if len(values) > MAX_RANK:
        raise NoKernel(f"rank {len(values)} above {MAX_RANK}")
    return [fill] * (MAX_RANK - len(values)) + list(values)


def element_type(ctx: PlanContext, name: str) -> str:
    """The element type T that tensor.cl moves ``name`` as: its bit patterns where float tensors are half."""
    dtype = ctx.dtype(name)
    if dtype not in ELEMENT_TYPES:
        raise NoKernel(f"dtype {dtype} of {name!r}")
    return HALF_BITS if dtype == "float32" and ctx.half_storage else ELEMENT_TYPES[dtype]


def fill_value(element: str, value: float) -> np.float32:
    """The ``value`` argument of tensor.cl's fill and pad, which store ``(T)value``: for half tensors, moved as
    HALF_BITS, the half's bit pattern (an integer below 2**16, exact in a float)."""
    if element == HALF_BITS:
        return f32(float(np.float16(value).view(np.uint16)))
    return f32(value)


def merge_axes(shape, src_strides, dst_strides) -> tuple[list[int], list[int], list[int]]:
    """Drop size-1 axes and merge neighbours that are contiguous in both tensors (fewer index steps)."""
    axes = [(int(n), int(s), int(d)) for n, s, d in zip(shape, src_strides, dst_strides) if n != 1] or [(1, 1, 1)]
    merged = [axes[0]]
    for n, s, d in axes[1:]:
        pn, ps, pd = merged[-1]
        if ps == s * n and pd == d * n:
            merged[-1] = (pn * n, s, d)
        else:
            merged.append((n, s, d))
    return [a[0] for a in merged], [a[1] for a in merged], [a[2] for a in merged]


GATHER_AS_COPIES = 4  # Gathers with at most this many constant indices run as block copies


def strided_copy(src, dst: str, element: str, shape, src_strides, dst_strides, src_offset=0, dst_offset=0) -> Launch:
    shape, src_strides, dst_strides = merge_axes(shape, src_strides, dst_strides)
    meta = padded(shape, 1) + padded(src_strides, 0) + padded(dst_strides, 0)
    meta = np.array(meta + [src_offset, dst_offset], np.int32)
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    work = (-(-shape[-1] // COPY_CHUNK), rows)
    local = (min(LINEAR_LOCAL // 4, work[0]), 1)
    return Launch("tensor", "strided_copy", [src, TensorArg(dst), meta, i32(rows)], work, local, {"T": element})


# ---------------------------------------------------------------- pooling


@kernel_for("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
def plan_pool(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    ctx.require_float(node, [x])
    if len(node.outputs) > 1 and node.outputs[1]:
        raise NoKernel("MaxPool Indices output")
    if len(ctx.shape(x)) != 4:
        raise NoKernel(f"{len(ctx.shape(x)) - 2}-D pooling, kernels take 2-D")
    n, c, h, w = ctx.shape(x)
    _, _, ho, wo = ctx.shape(y)
    is_max = node.op in ("MaxPool", "GlobalMaxPool")
    kernel = node.attrs.get("kernel_shape", [h, w])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    if node.op.startswith("Global") or (list(kernel) == [h, w] and (ho, wo) == (1, 1) and not any(pads)):
        args = [TensorArg(x), TensorArg(y), i32(h * w), i32(n * c), i32(is_max)]
        return plan("pool", [linear_launch("pool", "global_pool", args, n * c)], kernel="global_pool")
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    include_pad = int(node.attrs.get("count_include_pad", 0))
    tail = [i32(is_max), i32(include_pad), i32(pads[2]), i32(pads[3])]
    tn = 16 if wo >= 12 else 8 if wo > 4 else 4

    def reach(tn: int) -> int:  # how far the vector loads reach past either end of a row
        return max(pads[1], ((-(-wo // tn) - 1) * tn * sw - pads[1] + (kernel[1] - 1) * dw + tn * sw) - w)

    # On GPUs one output per work-item (pool2d): the vector kernels below are for CPUs, where a work-item walking a
    # column block down every row (maxpool_rows) is cheap; on the H200 it took 65-99 us for a stem's 3x3 MaxPool.
    if ctx.device_kind == "cpu" and reach(tn) <= GUARD_BYTES // 4:  # vector loads stay inside the guard bands
        tn_rows = tn if sw == 1 else min(tn, 8)
        if (is_max and (dh, dw) == (1, 1) and sw in (1, 2) and sh <= kernel[0] <= 16 and pads[0] < kernel[0]
                and reach(tn_rows) <= GUARD_BYTES // 4):  # fmt: skip
            # Separable (pool.cl maxpool_rows); with stride 2 the 8-wide taps are one 16-wide load (window.cl).
            work = (-(-wo // tn_rows), n * c)
            args = [GuardedTensorArg(x), TensorArg(y), *map(i32, (h, w, ho, wo, pads[0], pads[1], n * c))]
            defines = {"TN": tn_rows, "SW": sw, "DW": 1, "KH": int(kernel[0]), "KW": int(kernel[1]), "SH": sh}
            launch = Launch("pool", "maxpool_rows", args, work, local_size(work, (1, 4), ctx.max_work_group_size),
                            defines)  # fmt: skip
            return plan("pool", [launch], kernel="maxpool_rows", TN=tn_rows)
        work = (-(-wo // tn), ho, n * c)
        sizes = (h, w, ho, wo, kernel[0], kernel[1], sh, pads[0], pads[1], dh)
        args = [GuardedTensorArg(x), TensorArg(y), *map(i32, sizes)]
        launch = Launch("pool", "pool2d_vec", args + tail, work, local_size(work, (4, 2, 1), ctx.max_work_group_size),
                        {"TN": tn, "SW": sw, "DW": dw})  # fmt: skip
        return plan("pool", [launch], kernel="pool2d_vec", TN=tn)
    work = (wo, ho, n * c)
    args = [TensorArg(x), TensorArg(y), *map(i32, (h, w, ho, wo, kernel[0], kernel[1], sh, sw, pads[0], pads[1]))]
    wanted = (16, 1, 1) if ctx.device_kind == "cpu" else (32, 4, 1)  # GPUs: 128 work-items per group
    launch = Launch("pool", "pool2d", [*args, i32(dh), i32(dw), *tail], work,
                    local_size(work, wanted, ctx.max_work_group_size))  # fmt: skip
    return plan("pool", [launch], kernel="pool2d")


# ---------------------------------------------------------------- element-wise

# ONNX op -> activation, for the ops that run as one activation of unary_chain (elementwise.cl)
UNARY = {op: activation.name for op, activation in BY_ONNX_OP.items()}
BINARY = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3, "Max": 4, "Min": 5, "Pow": 6}
UNARY_VECTOR_WIDTH = 8


def unary_params(node: Node, ctx: PlanContext) -> tuple[float, float]:
    if node.op == "Clip":
        bounds = []
        for index, fallback in ((1, -math.inf), (2, math.inf)):
            name = node.inputs[index] if len(node.inputs) > index else ""
            value = ctx.constant(name)
            if name and value is None:
                raise NoKernel("Clip bounds are not constants")
            bounds.append(float(value) if value is not None else fallback)
        return bounds[0], bounds[1]
    params = BY_ONNX_OP[node.op].params
    return tuple(float(node.attrs.get(k, v)) for k, v in params) + (0.0, 0.0)[len(params) :]


@kernel_for(*UNARY)
def plan_unary(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    ctx.require_float(node, [x])
    p0, p1 = unary_params(node, ctx)
    count = int(np.prod(ctx.shape(y), dtype=np.int64))
    acts = np.array([CODES[UNARY[node.op]]], np.int32)
    args = [TensorArg(x), TensorArg(y), i32(count), acts, np.array([p0, p1], np.float32), i32(1)]
    launch = linear_launch("elementwise", "unary_chain", args, -(-count // UNARY_VECTOR_WIDTH))
    launch.defines = {"VW": UNARY_VECTOR_WIDTH}
    return plan("elementwise", [launch], kernel="unary_chain", VW=UNARY_VECTOR_WIDTH)


@kernel_for(*BINARY)
def plan_binary(node: Node, ctx: PlanContext) -> KernelPlan:
    if len(node.inputs) != 2:
        raise NoKernel(f"{node.op} with {len(node.inputs)} inputs")
    a, b = node.inputs
    y = node.outputs[0]
    ctx.require_float(node, [a, b])
    a_shape = ctx.constant(a).shape if ctx.constant(a) is not None else ctx.shape(a)
    b_shape = ctx.constant(b).shape if ctx.constant(b) is not None else ctx.shape(b)
    out_shape = ctx.shape(y)
    count = int(np.prod(out_shape, dtype=np.int64))
    op = i32(BINARY[node.op])
    no_act = [i32(0), f32(0), f32(0)]
    if tuple(a_shape) == tuple(out_shape) and (tuple(b_shape) == tuple(out_shape) or int(np.prod(b_shape)) == 1):
        b_scalar = i32(tuple(b_shape) != tuple(out_shape))
        args = [operand(ctx, a), operand(ctx, b), TensorArg(y), i32(count), op, b_scalar, *no_act]
        launch = linear_launch("elementwise", "binary_same", args, -(-count // 4), {"VW": 4})
        return plan("elementwise", [launch], kernel="binary_same")

    def broadcast_strides(shape):
        shape = padded(list(shape), 1)
        strides = contiguous_strides(tuple(shape))
        return [0 if size == 1 else stride for size, stride in zip(shape, strides)]

    meta = np.array(padded(list(out_shape), 1) + broadcast_strides(a_shape) + broadcast_strides(b_shape), np.int32)
    args = [operand(ctx, a), operand(ctx, b), TensorArg(y), meta, i32(count), op, *no_act]
    launch = linear_launch("elementwise", "binary_broadcast", args, count, {"VW": 4})
    return plan("elementwise", [launch], kernel="binary_broadcast")


@kernel_for("QuantizeLinear", "DequantizeLinear")
def plan_quantize(node: Node, ctx: PlanContext) -> KernelPlan:
    x, scale_name = node.inputs[0], node.inputs[1]
    zp_name = node.inputs[2] if len(node.inputs) > 2 else ""
    scale, zero_point = ctx.constant(scale_name), ctx.constant(zp_name)
    if scale is None or scale.size != 1 or (zp_name and (zero_point is None or zero_point.size != 1)):
        raise NoKernel("scale and zero point must be per-tensor constants")
    y = node.outputs[0]
    quantized = y if node.op == "QuantizeLinear" else x
    qtype = ctx.dtype(quantized)
    if qtype not in ("uint8", "int8"):
        raise NoKernel(f"quantized dtype {qtype}")
    zp = int(zero_point.reshape(())) if zero_point is not None else 0
    count = int(np.prod(ctx.shape(y), dtype=np.int64))
    args = [TensorArg(x), TensorArg(y), i32(count), f32(float(scale.reshape(())))]
    if node.op == "QuantizeLinear":
        limits = np.iinfo(np.dtype(qtype))
        args += [i32(zp), i32(limits.min), i32(limits.max)]
        kernel = "quantize_linear"
    else:
        args += [i32(zp)]
        kernel = "dequantize_linear"
    launch = linear_launch("elementwise", kernel, args, count, {"QTYPE": ELEMENT_TYPES[qtype]})
    return plan("elementwise", [launch], kernel=kernel)


# ---------------------------------------------------------------- data movement


@kernel_for("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def plan_view(node: Node, ctx: PlanContext) -> KernelPlan:
    if any(node.outputs[1:]):
        raise NoKernel(f"{node.op} with a second output")
    return plan("copy", [BufferCopy(node.inputs[0], node.outputs[0])], kernel="buffer copy")


@kernel_for("Transpose")
def plan_transpose(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    perm = node.attrs.get("perm", list(reversed(range(len(shape)))))
    src_strides = contiguous_strides(shape)
    out_shape = [shape[p] for p in perm]
    launch = strided_copy(
        TensorArg(x), y, element_type(ctx, x), out_shape, [src_strides[p] for p in perm], contiguous_strides(out_shape)
    )
    return plan("tensor", [launch], kernel="strided_copy")


@kernel_for("Slice")
def plan_slice(node: Node, ctx: PlanContext) -> KernelPlan:
    """One strided copy. A Slice of a Slice (YOLOX's Focus: rows, then columns) reads straight from the first
    Slice's input when that tensor lives outside the arena (a graph input or constant), so the memory plan's
    lifetimes stay valid; the first Slice is then dropped by the executor if nothing else reads its output."""
    y = node.outputs[0]
    source, offset, strides = slice_view(node, ctx, compose=True)
    out_shape = ctx.shape(y)
    launch = strided_copy(TensorArg(source), y, element_type(ctx, node.inputs[0]), out_shape, strides,
                          contiguous_strides(out_shape), offset)  # fmt: skip
    return plan("tensor", [launch], kernel="strided_copy", composed=source != node.inputs[0])


def slice_view(node: Node, ctx: PlanContext, compose: bool) -> tuple[str, int, list[int]]:
    """(source tensor, offset, per-axis strides in source elements) of a Slice node's output."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    values = [ctx.constant(name) if name else None for name in node.inputs[1:]] + [None] * 4
    starts, ends, axes, steps = values[:4]
    if starts is None or ends is None or any(n and ctx.constant(n) is None for n in node.inputs[1:]):
        raise NoKernel("Slice starts/ends/axes/steps are not constants")
    source, offset, src_strides = x, 0, contiguous_strides(shape)
    producer = _producer(ctx, x) if compose else None
    if producer is not None and producer.op == "Slice" and producer.placement == node.placement:
        try:
            inner = slice_view(producer, ctx, compose=False)
        except NoKernel:
            inner = None
        graph = ctx.graph
        if inner is not None and inner[0] not in graph.memory_plan.offsets and not graph.tensors[inner[0]].dynamic:
            source, offset, src_strides = inner
    axes = [int(a) % len(shape) for a in (axes if axes is not None else range(len(starts)))]
    steps = steps if steps is not None else [1] * len(axes)
    strides = list(src_strides)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        first, _, _ = slice(int(start), int(end), int(step)).indices(shape[axis])
        offset += first * src_strides[axis]
        strides[axis] = int(step) * src_strides[axis]
    return source, offset, strides


def _producer(ctx: PlanContext, name: str) -> Node | None:
    for candidate in ctx.graph.nodes:
        if name in candidate.outputs:
            return candidate
    return None


@kernel_for("Concat")
def plan_concat(node: Node, ctx: PlanContext) -> KernelPlan:
    y = node.outputs[0]
    out_shape = ctx.shape(y)
    axis = int(node.attrs.get("axis", 0)) % len(out_shape)
    out_strides = contiguous_strides(out_shape)
    element = element_type(ctx, y)
    launches, position = [], 0
    for name in node.inputs:
        value = ctx.constant(name)
        shape = value.shape if value is not None else ctx.shape(name)
        if int(np.prod(shape)) > 0:
            launches.append(
                strided_copy(operand(ctx, name), y, element, shape, contiguous_strides(shape), out_strides, 0,
                             position * out_strides[axis])
            )  # fmt: skip
        position += shape[axis]
    return plan("tensor", launches, kernel="strided_copy", copies=len(launches))


@kernel_for("Split")
def plan_split(node: Node, ctx: PlanContext) -> KernelPlan:
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", 0)) % len(shape)
    src_strides = contiguous_strides(shape)
    launches, position = [], 0
    for name in node.outputs:
        out_shape = ctx.shape(name)
        if name:
            launches.append(
                strided_copy(TensorArg(x), name, element_type(ctx, x), out_shape, src_strides,
                             contiguous_strides(out_shape), position * src_strides[axis])
            )  # fmt: skip
        position += out_shape[axis]
    return plan("tensor", launches, kernel="strided_copy", copies=len(launches))


@kernel_for("Expand")
def plan_expand(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    out_shape = ctx.shape(y)
    in_shape = padded(list(ctx.shape(x)), 1)[-len(out_shape) :]
    strides = [0 if size == 1 else stride for size, stride in zip(in_shape, contiguous_strides(tuple(in_shape)))]
    launch = strided_copy(TensorArg(x), y, element_type(ctx, x), out_shape, strides, contiguous_strides(out_shape))
    return plan("tensor", [launch], kernel="strided_copy")


@kernel_for("Gather")
def plan_gather(node: Node, ctx: PlanContext) -> KernelPlan:
    x, index_name = node.inputs
    y = node.outputs[0]
    indices = ctx.constant(index_name)
    if indices is None:
        raise NoKernel("indices are not a constant")
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", 0)) % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    flat = (indices.astype(np.int64).reshape(-1) % shape[axis]).astype(np.int32)
    if 0 < flat.size <= GATHER_AS_COPIES:
        # A few indices (ShuffleNet's channel split: index 0 and 1 of axis 0): one block copy per index with the
        # vector strided copy (10+ GB/s on PoCL) instead of a division-heavy gather per element (1.7 GB/s).
        element = element_type(ctx, x)
        launches = [strided_copy(TensorArg(x), y, element, [outer, inner], [shape[axis] * inner, 1],
                                 [flat.size * inner, 1], int(index) * inner, j * inner)
                    for j, index in enumerate(flat)]  # fmt: skip
        return plan("tensor", launches, kernel="strided_copy", copies=len(launches))
    count = outer * flat.size * inner
    args = [TensorArg(x), flat, TensorArg(y), i32(outer), i32(shape[axis]), i32(inner), i32(flat.size)]
    launch = linear_launch("tensor", "gather", args, count, {"T": element_type(ctx, x)})
    return plan("tensor", [launch], kernel="gather")


@kernel_for("Pad")
def plan_pad(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    pads = ctx.constant(node.inputs[1])
    value_name = node.inputs[2] if len(node.inputs) > 2 else ""
    value = ctx.constant(value_name) if value_name else np.zeros(1)
    axes_name = node.inputs[3] if len(node.inputs) > 3 else ""
    if pads is None or value is None or axes_name:
        raise NoKernel("pads / constant_value are not constants, or axes is given")
    mode = {"constant": 0, "reflect": 1, "edge": 2}.get(node.attrs.get("mode", "constant"))
    if mode is None:
        raise NoKernel(f"Pad mode {node.attrs.get('mode')!r}")
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    begins = [int(p) for p in pads[: len(in_shape)]]
    if mode == 0 and all(p >= 0 for p in pads.reshape(-1)) and int(np.prod(in_shape, dtype=np.int64)):
        # Constant padding: fill the output, then one strided copy of the input into its interior (FastestDet's
        # Pad took 0.44 ms with the per-element index arithmetic of `pad`).
        element = element_type(ctx, x)
        count = int(np.prod(out_shape, dtype=np.int64))
        fill = linear_launch("tensor", "fill", [TensorArg(y), i32(count), fill_value(element, value.reshape(-1)[0])],
                             count, {"T": element})  # fmt: skip
        out_strides = contiguous_strides(out_shape)
        offset = sum(b * st for b, st in zip(begins, out_strides))
        copy = strided_copy(TensorArg(x), y, element, list(in_shape), contiguous_strides(in_shape), out_strides, 0,
                            offset)  # fmt: skip
        return plan("tensor", [fill, copy], kernel="fill+strided_copy")
    meta = np.array(padded(list(out_shape), 1) + padded(list(in_shape), 1) + padded(begins, 0), np.int32)
    count = int(np.prod(out_shape, dtype=np.int64))
    element = element_type(ctx, x)
    args = [TensorArg(x), TensorArg(y), meta, i32(count), i32(mode), fill_value(element, value.reshape(-1)[0])]
    launch = linear_launch("tensor", "pad", args, count, {"T": element})
    return plan("tensor", [launch], kernel="pad")


# ---------------------------------------------------------------- resize and softmax


def source_coordinates(out_size: int, in_size: int, scale: float, mode: str) -> np.ndarray:
    """Fractional source coordinate of every output index (ONNX Resize coordinate_transformation_mode)."""
    x = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    raise NoKernel(f"coordinate_transformation_mode {mode!r}")


def axis_table(out_size: int, in_size: int, scale: float, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per output index: (source index pairs [out][2], weights of the second source [out])."""
    coords = source_coordinates(out_size, in_size, scale, attrs.get("coordinate_transformation_mode", "half_pixel"))
    if attrs.get("mode", "nearest") == "nearest":
        rounding = attrs.get("nearest_mode", "round_prefer_floor")
        rounders = {"round_prefer_floor": lambda c: np.ceil(c - 0.5), "round_prefer_ceil": lambda c: np.floor(c + 0.5),
                    "floor": np.floor, "ceil": np.ceil}  # fmt: skip
        if rounding not in rounders:
            raise NoKernel(f"nearest_mode {rounding!r}")
        index = np.clip(rounders[rounding](coords), 0, in_size - 1).astype(np.int32)
        return np.stack([index, index], 1), np.zeros(out_size, np.float32)
    coords = np.clip(coords, 0, in_size - 1)
    first = np.floor(coords).astype(np.int32)
    second = np.minimum(first + 1, in_size - 1)
    return np.stack([first, second], 1).astype(np.int32), (coords - first).astype(np.float32)


def is_integer_upsampling(index: np.ndarray, weight: np.ndarray, out_size: int, in_size: int) -> bool:
    """Whether an axis table reads source index o // f for output o (f = out_size / in_size, an integer)."""
    if out_size % in_size or np.any(weight != 0):
        return False
    expected = np.arange(out_size) // (out_size // in_size)
    return bool(np.array_equal(index[:, 0], expected) and np.array_equal(index[:, 1], expected))


def resize_scales(node: Node, ctx: PlanContext, in_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> tuple[float, float]:
    """(scale_h, scale_w) of a Resize of the trailing two axes: its scales input, else the ratio of the sizes."""
    scales_name = node.inputs[2] if len(node.inputs) > 2 else ""
    scales = ctx.constant(scales_name) if scales_name else None
    if scales is not None and scales.size == 4:
        return float(scales[2]), float(scales[3])
    return out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]


@kernel_for("Resize")
def plan_resize(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    ctx.require_float(node, [x])
    attrs = node.attrs
    if attrs.get("mode", "nearest") not in ("nearest", "linear") or attrs.get("antialias", 0):
        raise NoKernel(f"Resize mode {attrs.get('mode')!r} / antialias")
    if attrs.get("axes") or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NoKernel("Resize axes / keep_aspect_ratio_policy")
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    if len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
        raise NoKernel("Resize of other axes than the trailing two of a 4-D tensor")
    scale_h, scale_w = resize_scales(node, ctx, in_shape[2:], out_shape[2:])
    y_index, y_weight = axis_table(out_shape[2], in_shape[2], scale_h, attrs)
    x_index, x_weight = axis_table(out_shape[3], in_shape[3], scale_w, attrs)
    n, c, h, w = in_shape
    ho, wo = out_shape[2:]
    upsampling = is_integer_upsampling(y_index, y_weight, ho, h) and is_integer_upsampling(x_index, x_weight, wo, w)
    if wo == 2 * w and upsampling:
        work = (-(-w // 8), h, n * c)
        args = [TensorArg(x), TensorArg(y), i32(h), i32(w), i32(ho // h), i32(n * c)]
        local = local_size(work, (4, 2, 1), ctx.max_work_group_size)
        launch = Launch("resize", "upsample_nearest_w2", args, work, local)
        return plan("resize", [launch], kernel="upsample_nearest_w2", mode="nearest")
    work = (wo, ho, n * c)
    args = [TensorArg(x), TensorArg(y), y_index.reshape(-1), y_weight, x_index.reshape(-1), x_weight]
    args += [i32(h), i32(w), i32(ho), i32(wo)]
    launch = Launch("resize", "resize2d", args, work, local_size(work, (16, 1, 1), ctx.max_work_group_size))
    return plan("resize", [launch], kernel="resize2d", mode=attrs.get("mode", "nearest"))


@kernel_for("Softmax", "LogSoftmax")
def plan_softmax(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    ctx.require_float(node, [x])
    shape = ctx.shape(x)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    args = [TensorArg(x), TensorArg(y), i32(outer), i32(shape[axis]), i32(inner), i32(node.op == "LogSoftmax")]
    lines = outer * inner

    def default():
        # Few long lines (a classifier's 1000 classes) on a GPU: a work-group per line (one work-item per line
        # left the 1001-class softmax of MobileNetV2 at 0.1 ms on an H100).
        if ctx.device_kind != "cpu" and shape[axis] >= 128 and lines <= 4096:
            return {"WG": 1 << min(8, int(ctx.max_work_group_size).bit_length() - 1)}
        return {}

    config, source = ctx.config("softmax", {"L": shape[axis], "lines": lines}, default)
    if "WG" in config:
        group = int(config["WG"])
        launch = Launch("softmax", "softmax_group", args, (lines * group,), (group,), {"WG": group})
        if ctx.whole_group_shortfall(launch) is None:
            return KernelPlan("softmax", {"kernel": "softmax_group", **config}, source, [launch])
    launch = linear_launch("softmax", "softmax", args, lines)
    return plan("softmax", [launch], kernel="softmax")
