"""Kernel planners for the channel-blocked layout (layout.py, kernels/opencl/blocked.cl): blocked Conv nodes and
the two layout conversions. Weights are packed here, once, with one block of output channels innermost.

The block B is the last axis of every blocked tensor (layout.block_for chose it for the device's ISA); templates
are named after it: ``pw16``, ``direct16``, ``dw16``, ``sep16`` on 16-wide blocks (AVX-512), ``pw8``... on 8-wide
ones (AVX2), ``pw4``... on 4-wide ones (SSE, NEON), so a table tuned for one block never configures another.
Their register tiles (TP x NB, TW x TY) must fit the ISA's vector registers (:func:`registers_needed`): the
heuristic defaults and the knob spaces (``KNOB_SPACES``, read by the tuner) keep to that budget.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from edgeinfer.cpu_isa import IsaClass
from edgeinfer.ir import Node
from edgeinfer.planning.context import PlanContext, activation_of, i32, knob_space, local_size
from edgeinfer.planning.conv import conv_args, default_local, epilogue_args
from edgeinfer.planning.layout import (
    BLOCKS,
    FROM_BLOCKED,
    LAYOUT_ATTR,
    SEPARABLE,
    TO_BLOCKED,
    blocks,
    kernel_kind,
    separable_parts,
)
from edgeinfer.planning.plan import KernelPlan, Launch, NoKernel, TensorArg
from edgeinfer.planning.registry import kernel_for
from edgeinfer.planning.tensor import axis_table, resize_scales

TEMPLATE = "blocked"
MAX_POOL_COLUMNS = 256  # widest input row whose column maxima the blocked max pool keeps in private memory

# ISAs whose FMA takes a broadcast scalar straight from memory (AVX-512's {1toN}, NEON's by-element form): the
# broadcast input value of pw/direct needs no register of its own there.
BROADCAST_OPERAND_ISAS = ("avx512", "neon", "simt")
TILE_PIXELS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14)  # TP values the knob spaces offer
TILE_BLOCKS = (1, 2, 3, 4)  # NB values


def padded_blocks(matrix: np.ndarray, count: int, block: int) -> np.ndarray:
    """[C][...] float32 -> [count * block][...] with zero rows past C."""
    out = np.zeros((count * block, *matrix.shape[1:]), np.float32)
    out[: matrix.shape[0]] = matrix
    return out


def pack_depthwise(weights: np.ndarray, count: int, block: int) -> np.ndarray:
    """Depthwise [C][1][KH][KW] -> [count][KH*KW][block]: per channel block, one vector of channels per tap."""
    c, _, kh, kw = weights.shape
    packed = padded_blocks(weights.reshape(c, kh * kw), count, block).reshape(count, block, kh * kw)
    return np.ascontiguousarray(packed.transpose(0, 2, 1))


def vectors_per_block(isa: IsaClass, block: int) -> int:
    """Vector registers one block of ``block`` floats takes on ``isa``."""
    return max(1, block // isa.lanes)


def registers_needed(kind: str, config: dict[str, Any], block: int, isa: IsaClass) -> int:
    """Vector registers the inner loop of blocked kernel ``kind`` ("pw", "direct", "dw", "sep") keeps live with
    ``config``'s tile: its accumulators and what the loop needs besides them.

    - pw, direct: TP x NB accumulators, NB weight vectors, and the broadcast input value (a register unless the
      FMA reads it from memory);
    - dw: TW x TY accumulators and the input vector (the KH*KW weights are FMA memory operands where they do not
      fit: each is reused only TW times per row, against TP*NB times for pw's);
    - sep: TP x NB pointwise accumulators live through the depthwise part, which adds TP depthwise accumulators;
      then NB weights; plus the input vector and the broadcast (the old AVX-512 rule TP*NB + TP + NB <= 30).
    """
    per = vectors_per_block(isa, block)
    if kind in ("pw", "direct"):
        tp, nb = int(config["TP"]), int(config["NB"])
        return (tp * nb + nb) * per + (isa.name not in BROADCAST_OPERAND_ISAS)
    if kind == "dw":
        return (int(config["TW"]) * int(config["TY"]) + 1) * per
    if kind == "sep":
        tp, nb = int(config["TP"]), int(config["NB"])
        return (tp * nb + tp + nb) * per + 2
    raise ValueError(f"unknown blocked kernel kind {kind!r}")


def fits(kind: str, config: dict[str, Any], block: int, isa: IsaClass) -> bool:
    """Whether ``config``'s register tile fits ``isa``'s vector registers (no spills in the inner loop)."""
    return registers_needed(kind, config, block, isa) <= isa.registers


def fitted_tile(kind: str, tp: int, nb: int, block: int, isa: IsaClass) -> dict[str, int]:
    """The tile nearest to TP x NB that fits: for NB from ``nb`` down, the widest TP <= ``tp`` that fits, kept once
    it is at least min(4, tp) pixels (narrower tiles reload the weights too often); else 1 x 1."""
    for blocks_ in range(nb, 0, -1):
        for pixels in range(tp, 0, -1):
            if pixels >= min(4, tp) and fits(kind, {"TP": pixels, "NB": blocks_}, block, isa):
                return {"TP": pixels, "NB": blocks_}
    return {"TP": 1, "NB": 1}


def default_tiles(kind: str, workload: dict[str, Any], block: int, isa: IsaClass) -> dict[str, int]:
    """The heuristic default: what measured fastest on PoCL at block 16 on AVX-512 (the tuner,
    sessions 3-4: 12 pixels x 2 blocks for 1x1 layers, 6 x 2 for direct ones, 8 x 2 for separable pairs, 4 x 2
    depthwise pixels), shrunk to the ISA's register budget (:func:`fitted_tile`). The tuner beats it by 1.2-1.9x
    on some layers (tuned_configs)."""
    if kind == "dw":
        tiles = [{"TW": tw, "TY": ty} for tw, ty in ((4, 2), (4, 1), (2, 1)) if fits("dw", {"TW": tw, "TY": ty}, block,
                                                                                      isa)]  # fmt: skip
        return tiles[0] if tiles else {"TW": 1, "TY": 1}
    cbo = blocks(workload["Co"], block)
    if kind == "pw":
        tp = min(12, workload["H"] * workload["W"])
    else:  # direct, sep: a tile is part of one output row
        tp = min(6 if kind == "direct" else 8, workload["W"])
    return fitted_tile(kind, max(tp, 1), min(2, cbo), block, isa)


def blocked_local(ctx: PlanContext, config: dict, work: tuple[int, ...]) -> tuple[int, ...]:
    """CPUs: one work-item per group (each work-item already holds a whole register tile); GPUs as elsewhere."""
    if "local" in config:
        return tuple(config["local"])
    return (1,) * len(work) if ctx.device_kind == "cpu" else default_local(ctx, work)


def plan_blocked_conv(node: Node, ctx: PlanContext) -> KernelPlan:
    """A Conv that layout.py made blocked: output blocked, X blocked or plain, Z blocked."""
    kind = conv_kind_of(node, ctx)
    layout = node.attrs[LAYOUT_ATTR]
    x_blocked = bool(layout["inputs"][0])
    x_name, y = node.inputs[0], node.outputs[0]
    weights = ctx.constant(node.inputs[1]).astype(np.float32)
    co, kh, kw = weights.shape[0], weights.shape[2], weights.shape[3]
    x_shape = ctx.shape(x_name)
    n, (h, w) = x_shape[0], x_shape[2:4]
    c = layout["channels"][0] if x_blocked else x_shape[1]
    _, cbo, ho, wo, block = ctx.shape(y)
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    (bias, z), tail = epilogue_args(node, ctx, co, y)
    if kind == "depthwise":
        template = f"dw{block}"
        workload = {"C": c, "H": ho, "W": wo, "K": kh, "S": sh}
        config, source = ctx.config(template, workload, lambda: default_tiles("dw", workload, block, ctx.isa))
        tw, ty = int(config["TW"]), int(config["TY"])
        work = (-(-ho // ty), cbo, n)
        geometry = list(map(i32, (cbo, h, w, ho, wo, pads[0], pads[1])))
        inputs = [TensorArg(x_name), pack_depthwise(weights, cbo, block)]
        args, epilogue = conv_args(inputs, padded_blocks(bias, cbo, block), z, y, geometry, tail)
        defines = {"BLOCK": block, "TW": tw, "TY": ty, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw,
                   "ACT": int(tail[1]), "HAS_Z": int(tail[0])}  # fmt: skip
        kernel = "conv_dw_blocked"
    else:
        short = "pw" if kind == "pointwise" else "direct"
        template = f"{short}{block}"
        workload = {"C": c, "Co": co, "H": ho, "W": wo, "KH": kh, "KW": kw, "S": sh, "XB": int(x_blocked)}
        config, source = ctx.config(template, workload, lambda: default_tiles(short, workload, block, ctx.isa))
        tp, nb = int(config["TP"]), int(config["NB"])
        groups_of_nb = -(-cbo // nb)
        # [Co][C][KH][KW] -> [CBO'][KH][C][KW][B], CBO' a multiple of NB (whole groups load whole blocks).
        padded = padded_blocks(weights, groups_of_nb * nb, block).reshape(groups_of_nb * nb, block, c, kh, kw)
        packed = np.ascontiguousarray(padded.transpose(0, 3, 2, 4, 1))
        bias_blocks = padded_blocks(bias, groups_of_nb * nb, block)
        defines = {"BLOCK": block, "TP": tp, "NB": nb, "IN_BLOCKED": int(x_blocked), "KH": kh, "KW": kw, "SH": sh,
                   "SW": sw, "DH": dh, "DW": dw, "ACT": int(tail[1]), "HAS_Z": int(tail[0])}  # fmt: skip
        if kind == "pointwise":
            kernel, work = "conv_pw_blocked", (-(-(h * w) // tp), groups_of_nb, n)
            geometry = [i32(c), i32(h * w), i32(cbo)]
        else:
            kernel, work = "conv_direct_blocked", (ho, groups_of_nb, n)
            geometry = [i32(c), i32(h), i32(w), i32(ho), i32(wo), i32(cbo), i32(pads[0]), i32(pads[1])]
        args, epilogue = conv_args([TensorArg(x_name), packed], bias_blocks, z, y, geometry, tail)
    local = blocked_local(ctx, config, work)
    config["local"] = list(local)
    return KernelPlan(template, config, source, [Launch(TEMPLATE, kernel, args, work, local, defines, epilogue)])


def plan_separable_conv(node: Node, ctx: PlanContext) -> KernelPlan:
    """A depthwise Conv and the 1x1 Conv reading it (layout.SEPARABLE), in one conv_sep_blocked launch."""
    depthwise, pointwise = separable_parts(node)
    x, y = node.inputs[0], node.outputs[0]
    ctx.require_float(node, [x, depthwise.inputs[1], pointwise.inputs[1]])
    w_dw = ctx.constant(depthwise.inputs[1]).astype(np.float32)
    w_pw = ctx.constant(pointwise.inputs[1]).astype(np.float32)
    n, cb, h, w, block = ctx.shape(x)
    _, cbo, ho, wo, _ = ctx.shape(y)
    c, co, kh, kw = w_dw.shape[0], w_pw.shape[0], w_dw.shape[2], w_dw.shape[3]
    sh, sw = depthwise.attrs.get("strides", [1, 1])
    dh, dw = depthwise.attrs.get("dilations", [1, 1])
    pads = depthwise.attrs.get("pads", [0, 0, 0, 0])
    (bias_dw, _), _ = epilogue_args(depthwise, ctx, c, y)
    act_dw, dw0, dw1 = activation_of(depthwise)
    (bias, z), tail = epilogue_args(pointwise, ctx, co, y)
    template = f"sep{block}"
    workload = {"C": c, "Co": co, "H": ho, "W": wo, "K": kh, "S": sh}
    config, source = ctx.config(template, workload, lambda: default_tiles("sep", workload, block, ctx.isa))
    tp, nb = int(config["TP"]), int(config["NB"])
    groups_of_nb = -(-cbo // nb)
    # [Co][C] -> [CBO'][CB*B][B]: zero rows for the padded input channels and output blocks.
    matrix = np.zeros((groups_of_nb * nb * block, cb * block), np.float32)
    matrix[:co, :c] = w_pw.reshape(co, c)
    packed_pw = np.ascontiguousarray(matrix.reshape(groups_of_nb * nb, block, cb * block).transpose(0, 2, 1))
    inputs = [TensorArg(x), pack_depthwise(w_dw, cb, block), padded_blocks(bias_dw, cb, block), packed_pw]
    geometry = [*map(i32, (cb, h, w, ho, wo, cbo, pads[0], pads[1])), i32(act_dw), np.float32(dw0), np.float32(dw1)]
    args, epilogue = conv_args(inputs, padded_blocks(bias, groups_of_nb * nb, block), z, y, geometry, tail)
    defines = {"BLOCK": block, "SEP": 1, "TP": tp, "NB": nb, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh,
               "DW": dw, "ACT": int(tail[1]), "HAS_Z": int(tail[0]), "ACT_D": act_dw}  # fmt: skip
    work = (ho, groups_of_nb, n)
    local = blocked_local(ctx, config, work)
    config["local"] = list(local)
    launch = Launch(TEMPLATE, "conv_sep_blocked", args, work, local, defines, epilogue)
    return KernelPlan(template, config, source, [launch])


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


# ------------------------------------------------------------------ knob spaces (read by the tuner)

TILE_KNOBS = {
    "TP": "pixels per work-item (of one output row for direct/sep)",
    "NB": "blocks of output channels per work-item",
    "local": "work-group shape",
}
DEPTHWISE_KNOBS = {"TW": "pixels of one output row per work-item", "TY": "output rows per work-item",
                   "local": "work-group shape"}  # fmt: skip


def group_shapes(ctx: PlanContext) -> list[list[int]]:
    """Work-group shapes worth trying. On CPUs one work-item per group: a group is one task of a PoCL worker thread,
    and these kernels vectorise explicitly (floatB), so larger groups gained nothing measurable, while PoCL compiles a
    kernel once per group shape at its first enqueue and a group of several work-items costs twice the compile time of
    a group of one (SqueezeNet's first run on the 2-core VM: 21 s against 10.5 s; issue 17)."""
    if ctx.device_kind == "cpu":
        return [[1, 1, 1]]
    return [[16, 4, 1], [32, 2, 1], [8, 8, 1], [64, 1, 1]]


def blocked_knob_space(kind: str, knobs: dict[str, str]) -> Callable:
    """Register ``fn(workload, ctx, block)`` as the knob space of template ``<kind><B>`` for every block B."""

    def wrap(fn: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
        for block in BLOCKS:
            knob_space(f"{kind}{block}", knobs)(partial(fn, block=block))
        return fn

    return wrap


def tile_candidates(kind: str, workload: dict[str, Any], ctx: PlanContext, block: int, most_pixels: int):
    """TP x NB tiles within the register budget, NB within the output blocks, TP within ``most_pixels``."""
    cbo = blocks(workload["Co"], block)
    tiles = [{"TP": tp, "NB": nb} for tp in TILE_PIXELS for nb in TILE_BLOCKS
             if nb <= cbo and tp <= most_pixels and fits(kind, {"TP": tp, "NB": nb}, block, ctx.isa)]  # fmt: skip
    return [{**tile, "local": group} for tile in tiles for group in group_shapes(ctx)]


@blocked_knob_space("pw", TILE_KNOBS)
def pointwise_candidates(workload: dict[str, Any], ctx: PlanContext, block: int) -> list[dict[str, Any]]:
    return tile_candidates("pw", workload, ctx, block, 2 * workload["H"] * workload["W"])


@blocked_knob_space("direct", TILE_KNOBS)
def direct_candidates(workload: dict[str, Any], ctx: PlanContext, block: int) -> list[dict[str, Any]]:
    return tile_candidates("direct", workload, ctx, block, 2 * workload["W"])


@blocked_knob_space("sep", TILE_KNOBS)
def separable_candidates(workload: dict[str, Any], ctx: PlanContext, block: int) -> list[dict[str, Any]]:
    return tile_candidates("sep", workload, ctx, block, 2 * workload["W"])


@blocked_knob_space("dw", DEPTHWISE_KNOBS)
def depthwise_candidates(workload: dict[str, Any], ctx: PlanContext, block: int) -> list[dict[str, Any]]:
    tiles = [{"TW": tw, "TY": ty} for tw in (1, 2, 4, 8) for ty in (1, 2, 4)
             if tw <= 2 * workload["W"] and ty <= 2 * workload["H"] and fits("dw", {"TW": tw, "TY": ty}, block,
                                                                                 ctx.isa)]  # fmt: skip
    return [{**tile, "local": group} for tile in tiles for group in group_shapes(ctx)]


def plan_layout_conversion(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    plain = ctx.shape(y) if node.op == FROM_BLOCKED else ctx.shape(x)
    if len(plain) != 4:
        raise NoKernel(f"{node.op} of a {len(plain)}-D tensor")
    n, c, h, w = plain
    block = ctx.shape(x if node.op == FROM_BLOCKED else y)[-1]
    kernel = "from_blocked" if node.op == FROM_BLOCKED else "to_blocked"
    work = (h * w, blocks(c, block), n)
    local = local_size(work, (64, 1, 1), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(y), i32(c), i32(h * w)]
    launch = Launch(TEMPLATE, kernel, args, work, local, {"BLOCK": block})
    return KernelPlan("layout", {"local": list(local)}, "default", [launch])


@kernel_for("MaxPool", blocked=True)
def plan_blocked_max_pool(node: Node, ctx: PlanContext) -> KernelPlan:
    x, y = node.inputs[0], node.outputs[0]
    n, cb, h, w, block = ctx.shape(x)
    _, _, ho, wo, _ = ctx.shape(y)
    kh, kw = node.attrs["kernel_shape"]
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    work = (ho, n * cb)
    local = (1, 1) if ctx.device_kind == "cpu" else local_size(work, (16, 4), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(y), *map(i32, (h, w, ho, wo, pads[0], pads[1], n * cb))]
    defines = {"BLOCK": block, "POOL": 1, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw}
    if kh * w + kw * wo < kh * kw * wo and w <= MAX_POOL_COLUMNS:  # column maxima first: fewer loads
        defines["W_CACHE"] = w
    launch = Launch(TEMPLATE, "maxpool_blocked", args, work, local, defines)
    return KernelPlan(f"pool{block}", {"local": list(local)}, "default", [launch])


def plan_blocked_global_pool(node: Node, ctx: PlanContext) -> KernelPlan:
    """A pool of whole planes on blocked X (layout.is_global_pool), writing its plain [N][C][1][1] output."""
    if not node.attrs[LAYOUT_ATTR].get("plain_output"):
        raise NoKernel("a blocked pool without a plain output")  # layout.py makes none
    x = node.inputs[0]
    n, cb, h, w, block = ctx.shape(x)
    c = node.attrs[LAYOUT_ATTR]["channels"][0]
    is_max = node.op in ("MaxPool", "GlobalMaxPool")
    work = (cb, n)
    local = (1, 1) if ctx.device_kind == "cpu" else local_size(work, (64, 1), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(node.outputs[0]), *map(i32, (h * w, c, cb, n, is_max))]
    launch = Launch(TEMPLATE, "global_pool_blocked", args, work, local, {"BLOCK": block})
    return KernelPlan(f"pool{block}", {"local": list(local)}, "default", [launch])


@kernel_for("Resize", blocked=True)
def plan_blocked_resize(node: Node, ctx: PlanContext) -> KernelPlan:
    """Nearest-neighbour only (layout.py blocks no other mode): a vector copy per output pixel."""
    x, y = node.inputs[0], node.outputs[0]
    n, cb, h, w, block = ctx.shape(x)
    _, _, ho, wo, _ = ctx.shape(y)
    scale_h, scale_w = resize_scales(node, ctx, (h, w), (ho, wo))
    rows = axis_table(ho, h, scale_h, node.attrs)[0][:, 0]
    cols = axis_table(wo, w, scale_w, node.attrs)[0][:, 0]
    work = (wo, ho, n * cb)
    local = local_size(work, (16, 1, 1), ctx.max_work_group_size)
    args = [TensorArg(x), TensorArg(y), np.ascontiguousarray(rows, np.int32), np.ascontiguousarray(cols, np.int32),
            *map(i32, (h, w, ho, wo, n * cb))]  # fmt: skip
    launch = Launch(TEMPLATE, "resize_nearest_blocked", args, work, local, {"BLOCK": block})
    return KernelPlan(f"resize{block}", {"local": list(local)}, "default", [launch])


kernel_for(TO_BLOCKED, FROM_BLOCKED)(plan_layout_conversion)
kernel_for("Conv", blocked=True)(plan_blocked_conv)
kernel_for(SEPARABLE, blocked=True)(plan_separable_conv)
kernel_for("GlobalAveragePool", "GlobalMaxPool", "AveragePool", blocked=True)(plan_blocked_global_pool)
