"""Kernel planners for the compute-heavy ops: Conv (GEMM for 1x1, depthwise, direct), Gemm and MatMul.

Weights are constants: they are re-laid out here, once, into the packed order each template reads
(see the comments at the top of ``gemm.cl``, ``conv2d.cl`` and ``depthwise.cl``).
"""

from __future__ import annotations

import numpy as np

from edgeinfer.cpu_isa import ISA_CLASSES, IsaClass
from edgeinfer.ir import Node
from edgeinfer.planning import conv_gemm
from edgeinfer.planning.context import GUARD_BYTES, PlanContext, activation_of, f32, i32, knob_space, local_size
from edgeinfer.planning.plan import Epilogue, GuardedTensorArg, KernelPlan, Launch, NoKernel, TensorArg
from edgeinfer.planning.registry import kernel_for

GUARD_FLOATS = GUARD_BYTES // 4


def pick_row_block(rows: int, wanted: int = 16) -> int:
    """Rows (output channels) per work-item: ``wanted`` or the largest power of two not above ``rows``."""
    block = wanted
    while block > 1 and block > rows:
        block //= 2
    return block


def default_local(ctx: PlanContext, work: tuple[int, ...]) -> tuple[int, ...]:
    """CPUs want few work-items per group (each group is one task); GPUs want 64+ for occupancy."""
    if ctx.device_kind != "cpu":
        return local_size(work, (16, 4, 1), ctx.max_work_group_size)
    sizes, remaining = [], 8
    for count in work:  # fill dimension 0 first, then the next ones, up to 8 work-items
        size = 1
        while size * 2 <= min(count, remaining):
            size *= 2
        sizes.append(size)
        remaining //= size
    return tuple(sizes)


def check_row_reach(w: int, wo: int, tn: int, sw: int, dw: int, kw: int, pad_l: int) -> None:
    """The convolution kernels read whole vectors, also over the padding (window.cl); make sure they never
    reach further than the guard the executor leaves around every buffer."""
    load_width = tn * sw if sw <= 2 and tn * sw <= 32 else (tn - 1) * sw + 1  # window.cl row_tap
    last_x0 = (-(-wo // tn) - 1) * tn
    over_right = last_x0 * sw - pad_l + (kw - 1) * dw + load_width - w
    if max(pad_l, over_right) > GUARD_FLOATS:
        raise NoKernel(f"a row read reaches {max(pad_l, over_right)} floats past the tensor (guard {GUARD_FLOATS})")


def pack_rows(matrix: np.ndarray, block: int) -> np.ndarray:
    """[M][K] -> [ceil(M/block)][K][block], zero-padding the last row block (gemm.cl's A layout)."""
    m, k = matrix.shape
    padded = np.zeros((-(-m // block) * block, k), np.float32)
    padded[:m] = matrix
    return np.ascontiguousarray(padded.reshape(-1, block, k).transpose(0, 2, 1))


def epilogue_args(node: Node, ctx: PlanContext, channels: int, output: str) -> tuple[list, list]:
    """([bias, Z], [has_z, act, p0, p1]): the epilogue arguments shared by the conv templates."""
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias_name and ctx.constant(bias_name) is None:
        raise NoKernel("bias is not a constant")
    bias = ctx.constant(bias_name) if bias_name else None
    bias = np.zeros(channels, np.float32) if bias is None else bias.astype(np.float32).reshape(-1)
    z_name = node.inputs[3] if len(node.inputs) > 3 else ""
    act, p0, p1 = activation_of(node)
    z = TensorArg(z_name) if z_name else TensorArg(output)  # unused when has_z == 0
    return [bias, z], [i32(bool(z_name)), i32(act), f32(p0), f32(p1)]


def conv_args(
    inputs: list, bias: np.ndarray, z: TensorArg, y: str, geometry: list, tail: list
) -> tuple[list, Epilogue]:
    """The arguments of a convolution kernel, in the order they all take them (inputs..., bias, Z, Y,
    geometry..., has_z, act, p0, p1; ``tail`` from :func:`epilogue_args`), and where its epilogue slots are."""
    args = [*inputs, bias, z, TensorArg(y), *geometry, *tail]
    at = len(inputs)
    return args, Epilogue(z_slot=at + 1, y_slot=at + 2, has_z_slot=at + 3 + len(geometry))


@kernel_for("Conv")
def plan_conv(node: Node, ctx: PlanContext) -> KernelPlan:
    x_name, w_name = node.inputs[0], node.inputs[1]
    weights = ctx.constant(w_name)
    if weights is None:
        raise NoKernel("weights are not a constant")
    if len(ctx.shape(x_name)) != 4:
        raise NoKernel(f"{len(ctx.shape(x_name)) - 2}-D convolution, kernels take 2-D")
    ctx.require_float(node, [x_name, w_name])
    n, c, h, w = ctx.shape(x_name)
    y = node.outputs[0]
    _, co, ho, wo = ctx.shape(y)
    kh, kw = weights.shape[2:]
    sh, sw = node.attrs.get("strides", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    dh, dw = node.attrs.get("dilations", [1, 1])
    groups = int(node.attrs.get("group", 1))
    (bias, z), tail = epilogue_args(node, ctx, co, y)

    pointwise = groups == 1 and (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(pads)
    # On GPUs a 1x1 convolution is planned as any other (conv2d: implicit GEMM, which splits K where the image is
    # small), even where a table tuned it as a gemm: on the H200 that took MobileNetV2 from 0.82 to 0.49 ms (its 7x7
    # projections ran gemm_local in 3 work-groups). RESULTS 8d.
    if pointwise and (ctx.device_kind == "cpu" or not conv_gemm.wanted()):
        return plan_pointwise(ctx, x_name, weights.reshape(co, c), bias, z, y, n, c * h * w, h * w, tail)
    if groups == c == co:
        return plan_depthwise(ctx, node, weights, bias, z, y, (n, c, h, w, ho, wo), (sh, sw), pads, (dh, dw), tail)
    return plan_direct(ctx, node, weights, bias, z, y, (n, c, h, w, co, ho, wo), groups, (sh, sw), pads, (dh, dw), tail)


def vectors_per(floats: int, isa: IsaClass) -> int:
    """Vector registers that ``floats`` lanes of one OpenCL vector take on ``isa`` (a float16 is two ymm)."""
    return -(-floats // isa.lanes)


def fits_registers(accumulators: int, floats: int, ctx: PlanContext) -> bool:
    """Whether ``accumulators`` vectors of ``floats`` lanes leave room in ctx's CPU vector registers (two
    registers kept for operands); always true on GPUs, whose compilers tile for work-items."""
    return ctx.device_kind != "cpu" or accumulators * vectors_per(floats, ctx.isa) <= ctx.isa.registers - 2


def pick_column_block(n: int, largest: int = 16) -> int:
    """Columns per work-item for gemm_vec_m: cost ~ blocks * (columns + 2 for the weight load), a partial
    last block counting twice."""

    def cost(width: int) -> int:
        blocks = -(-n // width)
        return blocks * (width + 2) + (width + 2 if n % width else 0)

    return min(range(1, min(largest, n) + 1), key=lambda width: (cost(width), -width))


def default_gemm_config(m: int, n: int, isa: IsaClass = ISA_CLASSES["avx512"]) -> dict:
    """Weights broadcast from memory over 2 column vectors (gemm_bcast, 8 rows x 32 columns on AVX-512)
    wherever there are 16 columns or more: never far from the best tuned config on the MobileNetV2 /
    SqueezeNet / YOLOX workloads on PoCL (the tuner). The accumulators fill half the vector registers, so
    narrower ISAs (AVX2: 16 registers of 8 lanes) get fewer rows. Vectors over columns with lane swizzles for
    4-15 columns, vectors over rows only for Gemm-like products with 1-3 columns."""
    if n >= 16:
        nv = 2 if n >= 32 else 1
        rows = max(1, isa.registers // 2 // (nv * vectors_per(16, isa)))
        return {"VEC": "B", "TM": min(pick_row_block(rows, 8), m), "NV": nv}
    if n >= 4:
        return {"VEC": "N", "TM": pick_row_block(m, 16), "TN": 8 if n >= 8 else 4, "UNROLL_K": 4}
    rows = 16 if m >= 16 else 8 if m >= 8 else 4  # a vector width: rows past M are zero padding
    return {"VEC": "M", "TM": rows, "TN": pick_column_block(n), "UNROLL_K": 4}


def plan_pointwise(ctx, x_name, matrix, bias, z, y, batch, batch_stride, columns, tail) -> KernelPlan:
    """C[M][N] = A[M][K] B[K][N] per batch, A constant: 1x1 convs (N = pixels) and Gemm (N = 1)."""
    m, k = matrix.shape
    workload = {"M": m, "N": columns, "K": k}

    def default():
        if ctx.device_kind != "cpu":
            if columns >= 16 and m >= 16 and ctx.max_work_group_size >= 256:  # local-memory tiles (gemm_local)
                return {"VEC": "L", "TM": 4, "TN": 4 if columns >= 512 else 2 if columns >= 64 else 1,
                        "WM": 16, "WN": 16, "BK": 16}  # fmt: skip
            if columns < 4 and k >= 256 and ctx.max_work_group_size >= 128:  # a matrix-vector product
                return {"VEC": "R", "RG": 128}
            return {"VEC": "N", "TM": 4, "TN": 4, "UNROLL_K": 4}  # small register tiles, many work-items
        config = default_gemm_config(m, columns, ctx.isa)
        # gemm_vec_m: 2 items per group; gemm_bcast: each item is a large tile, one per group (one PoCL task).
        config["local"] = {"M": [2, 1, 1], "B": [1, 1, 1]}.get(config["VEC"], config.get("local"))
        if config["local"] is None:
            del config["local"]
        return config

    config, source = ctx.config("gemm", workload, default)
    if source.startswith("nearest") and config.get("VEC", "N") != default().get("VEC", "N"):
        # A nearest workload lends its tile sizes, not its kernel: a matrix-vector product must not inherit
        # gemm_local from a 7x7 layer, nor a 56x56 layer gemm_vec_m from a classifier.
        config, source = default(), f"default (the {source} config is for another kernel)"
    if config.get("VEC") in ("R", "L"):
        planner = plan_reduce_gemm if config["VEC"] == "R" else plan_local_gemm
        plan = planner(config, source, x_name, matrix, bias, z, y, batch, batch_stride, columns, tail)
        shortfall = ctx.whole_group_shortfall(plan.launches[0])
        if shortfall is None:
            return plan
        # The tiles need the whole work-group, which this compiled kernel cannot have: register tiles instead.
        source = f"default ({shortfall})"
        if config["VEC"] == "R":
            config = {"VEC": "M", "TM": 4, "TN": pick_column_block(columns), "UNROLL_K": 4}
        else:
            config = {"VEC": "N", "TM": 4, "TN": 4, "UNROLL_K": 4}
    vec, tm = config.get("VEC", "N"), int(config["TM"])
    tn = 16 * int(config["NV"]) if vec == "B" else int(config["TN"])
    work = (-(-columns // tn), -(-m // tm), batch)
    local = tuple(config["local"]) if "local" in config else default_local(ctx, work)
    config["local"] = list(local)
    padded_bias = np.zeros(-(-m // tm) * tm, np.float32)
    padded_bias[:m] = bias
    if vec == "B":
        if tn - 1 > GUARD_FLOATS:
            raise NoKernel(f"gemm_bcast with {tn} columns reads past the guard band ({GUARD_FLOATS} floats)")
        kernel, defines = "gemm_bcast", {"TM": tm, "NV": int(config["NV"])}
    else:
        kernel = "gemm_vec_n" if vec == "N" else "gemm_vec_m"
        defines = {"TM": tm, "TN": tn, "UNROLL_K": int(config.get("UNROLL_K", 4))}
        if vec == "N":
            defines["VEC_N"] = 1
    inputs = [pack_rows(matrix.astype(np.float32), tm), TensorArg(x_name)]
    args, epilogue = conv_args(inputs, padded_bias, z, y, [i32(m), i32(columns), i32(k), i32(batch_stride)], tail)
    return KernelPlan("gemm", config, source, [Launch("gemm", kernel, args, work, local, defines, epilogue)])


def flat_depthwise_fits(dims, kernel, strides, pads, dilations, tn: int) -> bool:
    """depthwise_flat needs stride 1 and Ho == H, Wo == W; its reads before/after a plane must stay within
    the guard band."""
    n, c, h, w, ho, wo = dims
    (kh, kw), (dh, dw) = kernel, dilations
    if strides != (1, 1) or (ho, wo) != (h, w):
        return False
    before = pads[0] * w + pads[1]
    after = (kh - 1) * dh * w - pads[0] * w + (kw - 1) * dw - pads[1] + tn
    return max(before, after) <= GUARD_FLOATS


def channels_per_item(channels: int, wanted: int = 8) -> int:
    """The largest of wanted, wanted/2, ... 1 that divides the batch * channels count (depthwise_flat)."""
    block = wanted
    while channels % block:
        block //= 2
    return block


def plan_reduce_gemm(config, source, x_name, matrix, bias, z, y, batch, batch_stride, columns, tail) -> KernelPlan:
    """gemm_reduce (gemm.cl): a work-group of RG work-items per output row, for 1-3 columns on GPUs."""
    m, k = matrix.shape
    group = int(config["RG"])
    local = (group, 1, 1)
    config = {**config, "local": list(local)}
    inputs = [np.ascontiguousarray(matrix, np.float32), TensorArg(x_name)]
    geometry = [i32(m), i32(columns), i32(k), i32(batch_stride)]
    args, epilogue = conv_args(inputs, np.asarray(bias, np.float32), z, y, geometry, tail)
    launch = Launch("gemm", "gemm_reduce", args, (group, m, batch), local, {"RG": group}, epilogue)
    return KernelPlan("gemm", config, source, [launch])


def plan_local_gemm(config, source, x_name, matrix, bias, z, y, batch, batch_stride, columns, tail) -> KernelPlan:
    """gemm_local (gemm.cl): one work-group per (WM*TM) x (WN*TN) block of C, tiles staged in local memory."""
    m, k = matrix.shape
    tm, tn, wm, wn = (int(config[key]) for key in ("TM", "TN", "WM", "WN"))
    rows, cols = wm * tm, wn * tn
    padded_m = -(-m // rows) * rows
    packed = np.zeros((k, padded_m), np.float32)  # [K][Mp]: a k-slice of the A tile is one coalesced read
    packed[:, :m] = matrix.T
    padded_bias = np.zeros(padded_m, np.float32)
    padded_bias[:m] = bias
    work = (-(-columns // cols) * wn, padded_m // rows * wm, batch)
    local = (wn, wm, 1)
    config = {**config, "local": list(local)}
    defines = {"TM": tm, "TN": tn, "WM": wm, "WN": wn, "BK": int(config.get("BK", 16))}
    geometry = [i32(m), i32(columns), i32(k), i32(batch_stride)]
    args, epilogue = conv_args([packed, TensorArg(x_name)], padded_bias, z, y, geometry, tail)
    return KernelPlan("gemm", config, source, [Launch("gemm", "gemm_local", args, work, local, defines, epilogue)])


def plan_depthwise(ctx, node, weights, bias, z, y, dims, strides, pads, dilations, tail) -> KernelPlan:
    n, c, h, w, ho, wo = dims
    kh, kw = weights.shape[2:]
    sh, sw = strides
    workload = {"C": c, "H": ho, "W": wo, "K": kh, "S": sh}

    def default():  # what won most often on PoCL (edgeinfer tune)
        if ctx.device_kind != "cpu":
            return {"TN": 4, "TY": 1}
        if wo <= 28 and flat_depthwise_fits(dims, (kh, kw), strides, pads, dilations, 16):
            return {"MODE": "flat", "TN": 16, "TC": channels_per_item(n * c, 16), "local": [1, 1]}
        rows = 4 if sh == 1 else 2  # stride 1: neighbouring output rows share input rows (depthwise.cl)
        tn = 16 if wo >= 32 else 8 if wo > 4 else 4
        if wo >= 56:  # large planes: one work-item per row block, walking the columns
            return {"MODE": "rows", "TN": tn if sw == 1 else 8, "TY": min(rows, ho), "local": [1, 1]}
        return {"TN": tn, "TY": min(rows, ho), "local": [1, 4, 1]}

    config, source = ctx.config("depthwise", workload, default)
    if config.get("MODE") == "flat" and not (
        flat_depthwise_fits(dims, (kh, kw), strides, pads, dilations, int(config["TN"])) and (n * c) % config["TC"] == 0
    ):
        if source == "override":
            raise NoKernel(f"depthwise_flat does not fit this workload: {workload}, config {config}")
        config, source = default(), f"default (the {source} config is flat, which does not fit)"
    mode, tn = config.get("MODE", "block"), int(config["TN"])
    defines = {"TN": tn, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dilations[0], "DW": dilations[1], "NC": n * c}
    if mode == "flat":
        tc = int(config["TC"])
        kernel, work, defines["TC"] = "depthwise_flat", (-(-(h * w) // tn), n * c // tc), tc
    else:
        ty = int(config["TY"])
        check_row_reach(w, wo, tn, sw, dilations[1], kw, pads[1])
        defines["TY"] = ty
        if mode == "rows":
            kernel, work = "depthwise_rows", (-(-ho // ty), n * c)
        else:
            kernel, work = "depthwise", (-(-wo // tn), -(-ho // ty), n * c)
    local = tuple(config["local"]) if "local" in config else default_local(ctx, work)
    config["local"] = list(local)
    inputs = [GuardedTensorArg(node.inputs[0]), weights.astype(np.float32).reshape(c, kh * kw)]
    geometry = [i32(c), i32(h), i32(w), i32(ho), i32(wo), i32(pads[0]), i32(pads[1])]
    args, epilogue = conv_args(inputs, bias, z, y, geometry, tail)
    return KernelPlan("depthwise", config, source, [Launch("depthwise", kernel, args, work, local, defines, epilogue)])


def plan_direct(ctx, node, weights, bias, z, y, dims, groups, strides, pads, dilations, tail) -> KernelPlan:
    n, c, h, w, co, ho, wo = dims
    kh, kw = weights.shape[2:]
    sh, sw = strides
    cig, cog = c // groups, co // groups
    workload = {"C": cig, "Co": cog, "H": ho, "W": wo, "KH": kh, "KW": kw, "S": sh, "G": groups}
    # The GPUs' direct config: their default without the implicit GEMM, and the fallback from igemm tiles that cannot
    # run (copied where used: the config is filled in below).
    gpu_direct = {"TM": pick_row_block(cog, 4), "TN": 4}

    def default():  # 16 x 16 blocks with broadcast weights won on every 3x3 of SqueezeNet on PoCL
        if ctx.device_kind != "cpu":  # implicit GEMM with local-memory tiles (conv_gemm.py), else direct
            if conv_gemm.wanted():
                return conv_gemm.default_config(ctx, cog, ho * wo, cig * kh * kw, n * groups)
            return dict(gpu_direct)
        tn = 16 if wo >= 12 else 8 if wo > 4 else 4
        return {"TM": min(16, cog), "TN": tn, "BCAST": 1, "local": [2, 1, 1]}

    config, source = ctx.config("conv2d", workload, default)
    if source.startswith("nearest") and config.get("MODE", "direct") != default().get("MODE", "direct"):
        # A nearest workload lends its tile sizes, not its kernel (as plan_pointwise).
        config, source = default(), f"default (the {source} config is for another kernel)"
    if config.get("MODE") == "igemm":
        try:
            return conv_gemm.plan_igemm(ctx, node, weights, bias, z, y, dims, groups, strides, pads, dilations, tail,
                                        config, source)  # fmt: skip
        except NoKernel as why:
            if source == "override":
                raise
            # The tiles need their whole work-group, which this compiled kernel cannot have: direct convolution.
            config, source = dict(gpu_direct), f"default ({why})"
    tm, tn = int(config["TM"]), int(config["TN"])
    co_blocks = -(-cog // tm)
    # [G][Cog][Cig][KH][KW] -> [G][co_blocks][Cig][KH][KW][TM], zero-padded to whole channel blocks.
    grouped = np.zeros((groups, co_blocks * tm, cig, kh, kw), np.float32)
    grouped[:, :cog] = weights.astype(np.float32).reshape(groups, cog, cig, kh, kw)
    packed = np.ascontiguousarray(grouped.reshape(groups, co_blocks, tm, cig, kh, kw).transpose(0, 1, 3, 4, 5, 2))
    work = (-(-wo // tn), ho, n * groups * co_blocks)
    local = tuple(config["local"]) if "local" in config else default_local(ctx, work)
    config["local"] = list(local)
    geometry = [i32(c), i32(h), i32(w), i32(co), i32(ho), i32(wo), i32(groups), i32(cig), i32(cog), i32(co_blocks),
                i32(sh), i32(pads[0]), i32(pads[1]), i32(dilations[0])]  # fmt: skip
    args, epilogue = conv_args([GuardedTensorArg(node.inputs[0]), packed], bias, z, y, geometry, tail)
    defines = {"TM": tm, "TN": tn, "KH": kh, "KW": kw, "SW": sw, "DW": dilations[1]}
    defines["BCAST"] = int(config.get("BCAST", 0))
    check_row_reach(w, wo, tn, sw, dilations[1], kw, pads[1])
    work = (-(-wo // tn), ho, n * groups * co_blocks)
    return KernelPlan("conv2d", config, source, [Launch("conv2d", "conv2d", args, work, local, defines, epilogue)])


@kernel_for("Gemm")
def plan_gemm(node: Node, ctx: PlanContext) -> KernelPlan:
    """Y = alpha * A' B' + beta * C with B (and C) constant: computed as rows of A times packed B'."""
    a_name, b_name = node.inputs[0], node.inputs[1]
    b = ctx.constant(b_name)
    if b is None:
        raise NoKernel("B is not a constant")
    ctx.require_float(node, [a_name, b_name])
    rows, k = ctx.shape(a_name)
    if node.attrs.get("transA", 0):
        if rows != 1 and k != 1:
            raise NoKernel("transA with more than one row")
        rows, k = k, rows
    weights = b if node.attrs.get("transB", 0) else b.T  # [N_out][K]
    weights = weights.astype(np.float32) * np.float32(node.attrs.get("alpha", 1.0))
    out_features = weights.shape[0]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = np.zeros(out_features, np.float32)
    if c_name:
        c = ctx.constant(c_name)
        if c is None or c.size not in (1, out_features):
            raise NoKernel("C is not a constant vector over the output features")
        bias = bias + np.float32(node.attrs.get("beta", 1.0)) * c.astype(np.float32).reshape(-1)
    y = node.outputs[0]
    tail = [i32(0), i32(0), f32(0), f32(0)]
    return plan_pointwise(ctx, a_name, weights, bias, TensorArg(y), y, rows, k, 1, tail)


@kernel_for("MatMul")
def plan_matmul(node: Node, ctx: PlanContext) -> KernelPlan:
    """A[..., K] x B[K][N] with B a constant 2-D matrix: every row of A is one batch of a pointwise GEMM."""
    a_name, b_name = node.inputs
    b = ctx.constant(b_name)
    if b is None or b.ndim != 2:
        raise NoKernel("B is not a constant matrix")
    ctx.require_float(node, [a_name, b_name])
    a_shape = ctx.shape(a_name)
    rows = int(np.prod(a_shape[:-1], dtype=np.int64))
    y = node.outputs[0]
    tail = [i32(0), i32(0), f32(0), f32(0)]
    bias = np.zeros(b.shape[1], np.float32)
    return plan_pointwise(ctx, a_name, b.T.astype(np.float32), bias, TensorArg(y), y, rows, a_shape[-1], 1, tail)


# ---------------------------------------------------------------------------------------------- knob spaces


def local_candidates(ctx: PlanContext) -> list[list[int]]:
    """Work-group shapes worth trying: on CPUs one group is one task of a PoCL worker thread (few work-items);
    on GPUs 64-256 work-items for occupancy."""
    if ctx.device_kind == "cpu":
        return [[1, 1, 1], [2, 1, 1], [4, 1, 1], [8, 1, 1], [16, 1, 1], [2, 2, 1], [4, 2, 1], [4, 4, 1], [1, 4, 1]]
    return [[16, 4, 1], [32, 2, 1], [8, 8, 1], [64, 1, 1], [16, 8, 1], [32, 4, 1], [4, 16, 1]]


def few_locals(ctx: PlanContext) -> list[list[int]]:
    return [[1, 1, 1], [2, 1, 1], [1, 2, 1]] if ctx.device_kind == "cpu" else local_candidates(ctx)


def column_widths(workload: dict) -> list[int]:
    """Output columns per work-item worth trying: up to twice the row's width."""
    return [tn for tn in (4, 8, 16) if tn <= 2 * workload["W"]]


@knob_space(
    "gemm",
    {
        "VEC": "kernel: B gemm_bcast (CPUs), N vector over columns, M vector over rows, L gemm_local, R gemm_reduce",
        "TM": "rows (output channels) per work-item",
        "TN": "columns per work-item (N, M) or per work-item tile (L)",
        "NV": "gemm_bcast: column vectors of 16 per work-item",
        "WM/WN": "gemm_local: work-group rows / columns",
        "BK": "gemm_local: reduction depth staged in local memory",
        "RG": "gemm_reduce: work-items per output row",
        "UNROLL_K": "reduction loop unroll",
        "local": "work-group shape",
    },
)
def gemm_knobs(workload: dict, ctx: PlanContext) -> list[dict]:
    m, n = workload["M"], workload["N"]
    locals_ = local_candidates(ctx)
    pairs = [(tm, tn) for tm in (4, 8, 16) for tn in (8, 16) if tn <= 2 * n and fits_registers(tm, tn, ctx)]
    shapes = [{"VEC": "N", "TM": tm, "TN": tn, "UNROLL_K": 4} for tm, tn in pairs]
    column_blocks = sorted({pick_column_block(n), min(4, n), min(8, n)})
    shapes += [{"VEC": "M", "TM": tm, "TN": tn, "UNROLL_K": 4} for tm in (8, 16) for tn in column_blocks
               if fits_registers(tn, tm, ctx)]  # fmt: skip
    found = [{**shape, "local": lo} for shape in shapes for lo in locals_]
    if ctx.device_kind == "cpu":
        vectors = [nv for nv in (1, 2, 3, 4) if 16 * (nv - 1) < n]  # at most one partial vector
        rows = [tm for tm in (2, 4, 6, 8, 12, 14, 16) if tm < 2 * m]
        found += [{"VEC": "B", "TM": tm, "NV": nv, "local": lo} for tm in rows for nv in vectors
                  for lo in few_locals(ctx) if fits_registers(tm * nv, 16, ctx)]  # fmt: skip
    elif n < 4:  # gemm_reduce: a work-group per row
        found += [{"VEC": "R", "RG": group} for group in (32, 64, 128, 256) if group <= ctx.max_work_group_size]
    elif n >= 16 and m >= 16:  # gemm_local: the work-group shape is part of the tile
        tiles = [(tm, tn, wm, wn, bk) for tm in (2, 4, 8) for tn in (1, 2, 4)
                 for wm, wn in ((16, 16), (8, 8), (16, 8), (8, 32)) for bk in (8, 16)]  # fmt: skip
        found += [{"VEC": "L", "TM": tm, "TN": tn, "WM": wm, "WN": wn, "BK": bk} for tm, tn, wm, wn, bk in tiles
                  if wm * tm <= 2 * m and wm * wn <= ctx.max_work_group_size]  # fmt: skip
    return found


@knob_space(
    "depthwise",
    {
        "MODE": "block (TY rows x TN columns per work-item), rows (a work-item walks its TY rows), flat (stride 1:"
        " TN pixels of the flattened plane x TC channels)",
        "TN": "columns (pixels) per work-item",
        "TY": "output rows per work-item",
        "TC": "flat: channels per work-item",
        "local": "work-group shape",
    },
)
def depthwise_knobs(workload: dict, ctx: PlanContext) -> list[dict]:
    widths = column_widths(workload)
    tiles = [(tn, ty) for tn in widths for ty in (1, 2, 4, 8) if fits_registers(ty, tn, ctx)]
    found = [{"TN": tn, "TY": ty, "local": lo} for tn, ty in tiles for lo in local_candidates(ctx)]
    two_d = [lo[:2] for lo in few_locals(ctx)]
    found += [{"MODE": "rows", "TN": tn, "TY": ty, "local": lo} for tn, ty in tiles for lo in two_d]
    if workload["S"] == 1:  # depthwise_flat (the planner refuses it where the plane is too wide)
        channels = [tc for tc in (1, 2, 4, 8, 16) if workload["C"] % tc == 0]
        found += [{"MODE": "flat", "TN": tn, "TC": tc, "local": lo} for tn in (8, 16) for tc in channels
                  for lo in two_d if fits_registers(tc, tn, ctx)]  # fmt: skip
    return found


@knob_space(
    "conv2d",
    {
        "TM": "output channels per work-item",
        "TN": "output columns per work-item",
        "BCAST": "1: each weight a broadcast load (any TM); 0: one vector of TM weights and lane swizzles",
        "MODE": "direct (conv2d.cl, the knobs above) or igemm (GPUs: conv_gemm.cl, implicit GEMM in local memory)",
        "WM/WN": "igemm: work-group rows / columns (TM x TN outputs each)",
        "BK": "igemm: reduction depth staged in local memory",
        "SPLIT": "igemm: slices of the reduction run side by side, added by conv_gemm_sum",
        "local": "work-group shape",
    },
)
def conv2d_knobs(workload: dict, ctx: PlanContext) -> list[dict]:
    widths = column_widths(workload)
    found = [{"TM": tm, "TN": tn, "local": lo} for tm in (4, 8, 16) for tn in widths for lo in local_candidates(ctx)
             if fits_registers(tm, tn, ctx)]  # fmt: skip
    rows = [tm for tm in (4, 6, 8, 12, 16) if tm < 2 * workload["Co"]]
    if ctx.device_kind != "cpu":
        found += conv_gemm.candidates(workload, ctx)
    return found + [{"TM": tm, "TN": tn, "BCAST": 1, "local": lo} for tm in rows for tn in widths
                    for lo in few_locals(ctx) if fits_registers(tm, tn, ctx)]  # fmt: skip
