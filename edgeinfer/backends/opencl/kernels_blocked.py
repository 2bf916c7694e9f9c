"""Kernel planners for the channel-blocked layout (layout.py, kernels/opencl/blocked.cl): blocked Conv nodes and
the two layout conversions. Weights are packed here, once, with 16 output channels innermost."""

from __future__ import annotations

import numpy as np

from edgeinfer.backends.opencl.kernels import (
    KernelPlan,
    Launch,
    NoKernel,
    PlanContext,
    TensorArg,
    activation_of,
    i32,
    kernel_for,
    local_size,
)
from edgeinfer.backends.opencl.kernels_conv import default_local, epilogue_args
from edgeinfer.backends.opencl.kernels_tensor import axis_table, resize_scales
from edgeinfer.backends.opencl.layout import (
    BLOCK,
    FROM_BLOCKED,
    LAYOUT_ATTR,
    SEPARABLE,
    TO_BLOCKED,
    blocks,
    kernel_kind,
    separable_parts,
)
from edgeinfer.ir import Node

TEMPLATE = "blocked"
MAX_POOL_COLUMNS = 256  # widest input row whose column maxima maxpool16 keeps in private memory (16 KB)


def padded_blocks(matrix: np.ndarray, count: int) -> np.ndarray:
    """[C][...] float32 -> [count * 16][...] with zero rows past C."""
    out = np.zeros((count * BLOCK, *matrix.shape[1:]), np.float32)
    out[: matrix.shape[0]] = matrix
    return out


def pack_depthwise(weights: np.ndarray, count: int) -> np.ndarray:
    """Depthwise [C][1][KH][KW] -> [count][KH*KW][16]: per channel block, one vector of 16 channels per tap."""
    c, _, kh, kw = weights.shape
    packed = padded_blocks(weights.reshape(c, kh * kw), count).reshape(count, BLOCK, kh * kw).transpose(0, 2, 1)
    return np.ascontiguousarray(packed)


def blocked_local(ctx: PlanContext, config: dict, work: tuple[int, ...]) -> tuple[int, ...]:
    """CPUs: one work-item per group (each work-item already holds a whole register tile); GPUs as elsewhere."""
    if "local" in config:
        return tuple(config["local"])
    return (1,) * len(work) if ctx.device_kind == "cpu" else default_local(ctx, work)


def plan_blocked_conv(node: Node, ctx: PlanContext) -> KernelPlan:
    """A Conv that layout.py made blocked: output NCHW16c, X blocked or plain, Z blocked."""
    kind = conv_kind_of(node, ctx)
    layout = node.attrs[LAYOUT_ATTR]
    x_blocked = bool(layout["inputs"][0])
    x_name, y = node.inputs[0], node.outputs[0]
    weights = ctx.constant(node.inputs[1]).astype(np.float32)
    co, kh, kw = weights.shape[0], weights.shape[2], weights.shape[3]
    x_shape = ctx.shape(x_name)
    n, (h, w) = x_shape[0], x_shape[2:4]
    c = layout["channels"][0] if x_blocked else x_shape[1]
    _, cbo, ho, wo, _ = ctx.shape(y)
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    (bias, z), tail = epilogue_args(node, ctx, co, y)
    if kind == "depthwise":
        workload = {"C": c, "H": ho, "W": wo, "K": kh, "S": sh}
        config, source = ctx.config("dw16", workload, lambda: {"TW": 4, "TY": 2})
        tw, ty = int(config["TW"]), int(config["TY"])
        work = (-(-ho // ty), cbo, n)
        args = [TensorArg(x_name), pack_depthwise(weights, cbo), padded_blocks(bias, cbo), z, TensorArg(y),
                i32(cbo), i32(h), i32(w), i32(ho), i32(wo), i32(pads[0]), i32(pads[1]), *tail]  # fmt: skip
        defines = {"TW": tw, "TY": ty, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw, "ACT": int(tail[1])}
        kernel, template = "conv_dw16", "dw16"
    else:
        template = "pw16" if kind == "pointwise" else "direct16"
        workload = {"C": c, "Co": co, "H": ho, "W": wo, "KH": kh, "KW": kw, "S": sh, "XB": int(x_blocked)}
        config, source = ctx.config(template, workload, lambda: default_tiles(template, ho * wo, wo, cbo))
        tp, nb = int(config["TP"]), int(config["NB"])
        groups_of_nb = -(-cbo // nb)
        # [Co][C][KH][KW] -> [CBO'][KH][C][KW][16], CBO' a multiple of NB (whole groups load whole blocks).
        padded = padded_blocks(weights, groups_of_nb * nb).reshape(groups_of_nb * nb, BLOCK, c, kh, kw)
        packed = np.ascontiguousarray(padded.transpose(0, 3, 2, 4, 1))
        bias_blocks = padded_blocks(bias, groups_of_nb * nb)
        defines = {"TP": tp, "NB": nb, "IN_BLOCKED": int(x_blocked), "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh,
                   "DW": dw, "ACT": int(tail[1])}  # fmt: skip
        if kind == "pointwise":
            kernel, work = "conv_pw16", (-(-(h * w) // tp), groups_of_nb, n)
            args = [TensorArg(x_name), packed, bias_blocks, z, TensorArg(y), i32(c), i32(h * w), i32(cbo), *tail]
        else:
            kernel, work = "conv_direct16", (ho, groups_of_nb, n)
            args = [TensorArg(x_name), packed, bias_blocks, z, TensorArg(y), i32(c), i32(h), i32(w), i32(ho),
                    i32(wo), i32(cbo), i32(pads[0]), i32(pads[1]), *tail]  # fmt: skip
    local = blocked_local(ctx, config, work)
    config["local"] = list(local)
    return KernelPlan(template, config, source, [Launch(TEMPLATE, kernel, args, work, local, defines)])


def plan_separable_conv(node: Node, ctx: PlanContext) -> KernelPlan:
    """A depthwise Conv and the 1x1 Conv reading it (layout.SEPARABLE), in one conv_sep16 launch."""
    depthwise, pointwise = separable_parts(node)
    x, y = node.inputs[0], node.outputs[0]
    ctx.require_float(node, [x, depthwise.inputs[1], pointwise.inputs[1]])
    w_dw = ctx.constant(depthwise.inputs[1]).astype(np.float32)
    w_pw = ctx.constant(pointwise.inputs[1]).astype(np.float32)
    n, cb, h, w, _ = ctx.shape(x)
    _, cbo, ho, wo, _ = ctx.shape(y)
    c, co, kh, kw = w_dw.shape[0], w_pw.shape[0], w_dw.shape[2], w_dw.shape[3]
    sh, sw = depthwise.attrs.get("strides", [1, 1])
    dh, dw = depthwise.attrs.get("dilations", [1, 1])
    pads = depthwise.attrs.get("pads", [0, 0, 0, 0])
    (bias_dw, _), _ = epilogue_args(depthwise, ctx, c, y)
    act_dw, dw0, dw1 = activation_of(depthwise)
    (bias, z), tail = epilogue_args(pointwise, ctx, co, y)
    workload = {"C": c, "Co": co, "H": ho, "W": wo, "K": kh, "S": sh}
    config, source = ctx.config("sep16", workload, lambda: {"TP": max(1, min(8, wo)), "NB": min(2, cbo)})
    tp, nb = int(config["TP"]), int(config["NB"])
    groups_of_nb = -(-cbo // nb)
    # [Co][C] -> [CBO'][CB*16][16]: zero rows for the padded input channels and output blocks.
    matrix = np.zeros((groups_of_nb * nb * BLOCK, cb * BLOCK), np.float32)
    matrix[:co, :c] = w_pw.reshape(co, c)
    packed_pw = np.ascontiguousarray(matrix.reshape(groups_of_nb * nb, BLOCK, cb * BLOCK).transpose(0, 2, 1))
    geometry = map(i32, (cb, h, w, ho, wo, cbo, pads[0], pads[1]))
    args = [TensorArg(x), pack_depthwise(w_dw, cb), padded_blocks(bias_dw, cb), packed_pw,
            padded_blocks(bias, groups_of_nb * nb), z, TensorArg(y), *geometry, i32(act_dw), np.float32(dw0),
            np.float32(dw1), *tail]  # fmt: skip
    defines = {"SEP": 1, "TP": tp, "NB": nb, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw,
               "ACT": int(tail[1]), "ACT_D": act_dw}  # fmt: skip
    work = (ho, groups_of_nb, n)
    local = blocked_local(ctx, config, work)
    config["local"] = list(local)
    return KernelPlan("sep16", config, source, [Launch(TEMPLATE, "conv_sep16", args, work, local, defines)])


def conv_kind_of(node: Node, ctx: PlanContext) -> str:
    """pointwise, depthwise or direct (layout.kernel_kind; X may be 5-D here: blocked)."""
    weights = ctx.constant(node.inputs[1])
    if weights is None or weights.ndim != 4:
        raise NoKernel("weights are not a constant 4-D tensor")
    ctx.require_float(node, node.inputs[:2])
    kind = kernel_kind(weights, node.attrs)
    if kind is None:
        raise NoKernel(f"grouped convolution (group {node.attrs.get('group')}) has no blocked kernel")
    return kind


def default_tiles(template: str, pixels: int, row: int, cbo: int) -> dict:
    """What measured fastest on PoCL (benchmarks/opencl_tune.py, session 3): 12 pixels x 2 blocks for 1x1 layers,
    6 x 2 for direct ones (12 x 2 was 2-5x slower on SqueezeNet's 3x3 layers then). Since session 4's unrolled
    stores the tuner picks 4-7 x 3-4 for those layers and 12 x 2 for MobileNetV2's stem, 1.2-1.9x faster than
    this default (tuned_configs); the default itself was not re-measured."""
    tp = min(12, pixels) if template == "pw16" else min(6, row)
    return {"TP": max(tp, 1), "NB": 2 if cbo >= 2 else 1}


def plan_layout_conversion(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    plain = ctx.shape(y) if node.op == FROM_BLOCKED else ctx.shape(x)
    if len(plain) != 4:
        raise NoKernel(f"{node.op} of a {len(plain)}-D tensor")
    n, c, h, w = plain
    kernel = "from_nchw16c" if node.op == FROM_BLOCKED else "to_nchw16c"
    work = (h * w, blocks(c), n)
    local = local_size(work, (64, 1, 1), ctx.max_work_group_size)
    launch = Launch(TEMPLATE, kernel, [TensorArg(x), TensorArg(y), i32(c), i32(h * w)], work, local)
    return KernelPlan("layout", {"local": list(local)}, "default", [launch])


@kernel_for("MaxPool", blocked=True)
def plan_blocked_max_pool(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    n, cb, h, w, _ = ctx.shape(x)
    _, _, ho, wo, _ = ctx.shape(y)
    kh, kw = node.attrs["kernel_shape"]
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    work = (ho, n * cb)
    local = (1, 1) if ctx.device_kind == "cpu" else local_size(work, (16, 4), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(y), *map(i32, (h, w, ho, wo, pads[0], pads[1], n * cb))]
    defines = {"POOL": 1, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw}
    if kh * w + kw * wo < kh * kw * wo and w <= MAX_POOL_COLUMNS:  # column maxima first: fewer loads
        defines["W_CACHE"] = w
    launch = Launch(TEMPLATE, "maxpool16", args, work, local, defines)
    return KernelPlan("pool16", {"local": list(local)}, "default", [launch])


def plan_blocked_global_pool(node: Node, ctx: PlanContext) -> KernelPlan:
    """A pool of whole planes on blocked X (layout.is_global_pool), writing its plain [N][C][1][1] output."""
    if not node.attrs[LAYOUT_ATTR].get("plain_output"):
        raise NoKernel("a blocked pool without a plain output")  # layout.py makes none
    x = node.inputs[0]
    n, cb, h, w, _ = ctx.shape(x)
    c = node.attrs[LAYOUT_ATTR]["channels"][0]
    is_max = node.op in ("MaxPool", "GlobalMaxPool")
    work = (cb, n)
    local = (1, 1) if ctx.device_kind == "cpu" else local_size(work, (64, 1), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(node.outputs[0]), *map(i32, (h * w, c, cb, n, is_max))]
    return KernelPlan("pool16", {"local": list(local)}, "default", [Launch(TEMPLATE, "global_pool16", args, work,
                                                                           local)])  # fmt: skip


@kernel_for("Resize", blocked=True)
def plan_blocked_resize(node: Node, ctx: PlanContext) -> KernelPlan:
    """Nearest-neighbour only (layout.py blocks no other mode): a vector copy per output pixel."""
    x, y = node.inputs[0], node.outputs[0]
    n, cb, h, w, _ = ctx.shape(x)
    _, _, ho, wo, _ = ctx.shape(y)
    scale_h, scale_w = resize_scales(node, ctx, (h, w), (ho, wo))
    rows = axis_table(ho, h, scale_h, node.attrs)[0][:, 0]
    cols = axis_table(wo, w, scale_w, node.attrs)[0][:, 0]
    work = (wo, ho, n * cb)
    local = local_size(work, (16, 1, 1), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(y), np.ascontiguousarray(rows, np.int32), np.ascontiguousarray(cols, np.int32),
            *map(i32, (h, w, ho, wo, n * cb))]  # fmt: skip
    return KernelPlan("resize16", {"local": list(local)}, "default", [Launch(TEMPLATE, "resize_nearest16", args,
                                                                            work, local)])  # fmt: skip


kernel_for(TO_BLOCKED, FROM_BLOCKED)(plan_layout_conversion)
kernel_for("Conv", blocked=True)(plan_blocked_conv)
kernel_for(SEPARABLE, blocked=True)(plan_separable_conv)
kernel_for("GlobalAveragePool", "GlobalMaxPool", "AveragePool", blocked=True)(plan_blocked_global_pool)
