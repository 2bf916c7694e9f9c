"""Implicit-GEMM convolution on GPUs (``kernels/opencl/conv_gemm.cl``): tile shapes, split K and the weight layout.

A convolution is, per image and group, C[M][N] = A[M][K] B[K][N] (M output channels, N output pixels, K input
channels x taps). The kernel tiles it in local memory and gathers B from the input as it goes; where the tiles of
a small image cannot fill the GPU's compute units (ResNet's 7x7 and 14x14 layers at batch 1), K is split into
slices that run side by side and a second kernel adds them up with the epilogue. The conv2d template's
``MODE: igemm`` configs (conv.py) plan through here.
"""

from __future__ import annotations

import os

import numpy as np

from edgeinfer.planning.context import PlanContext, i32, local_size
from edgeinfer.planning.plan import Epilogue, KernelPlan, Launch, NoKernel, ScratchArg, TensorArg

MAX_SPLIT = 16
# "direct" restores the GPU defaults from before this kernel (direct conv2d, gemm for 1x1): an escape hatch and the
# A/B of benchmarks/gpu_cuda_check.sh. Tuned tables and overrides still choose either.
GPU_CONV_ENV = "EDGEINFER_GPU_CONV"
GPU_CONV_MODES = ("igemm", "direct")  # unset means igemm
# Work-group shapes (WM rows x WN columns of work-items) the knob space offers.
GROUP_SHAPES = ((16, 16), (8, 16), (16, 8), (8, 8), (32, 8), (8, 32))


def wanted() -> bool:
    """Whether GPU convolutions default to the implicit GEMM (``EDGEINFER_GPU_CONV`` igemm or unset) or not
    (``direct``); any other value is a mistake, which would otherwise silently plan the default."""
    mode = os.environ.get(GPU_CONV_ENV, "").strip() or "igemm"
    if mode not in GPU_CONV_MODES:
        raise ValueError(f"{GPU_CONV_ENV} must be {' or '.join(GPU_CONV_MODES)} (or unset), got {mode!r}")
    return mode == "igemm"


def tile_shortfall(config: dict, max_work_group_size: int) -> str | None:
    """Why conv_gemm cannot run ``config`` (its gather needs whole B rows per pass of the work-group), or None."""
    tm, tn, wm, wn, bk, split = (int(config[key]) for key in ("TM", "TN", "WM", "WN", "BK", "SPLIT"))
    if wm * wn > max_work_group_size:
        return f"a {wm}x{wn} work-group exceeds the device's {max_work_group_size} work-items"
    if wm % tn:  # the work-group's items must cover whole rows of the BN-wide B tile
        return f"WM={wm} is not a multiple of TN={tn}"
    if bk % (wm // tn):
        return f"BK={bk} is not a multiple of the {wm // tn} B rows one pass gathers"
    if not 1 <= split <= MAX_SPLIT:
        return f"SPLIT={split} outside 1..{MAX_SPLIT}"
    return None


def default_config(ctx: PlanContext, cog: int, pixels: int, depth: int, planes: int) -> dict:
    """64 x 64 tiles of 4 x 4 per work-item, 16 deep, where the launch has a work-group per compute unit that way;
    else narrower tiles (32 columns, then 32 rows), then K split in up to 16 slices of at least 4 tile depths."""
    wm = wn = 16 if ctx.max_work_group_size >= 256 else 8
    bk, units = 16, ctx.compute_units or 32
    tm = 4 if cog > 32 else 2
    tn = 4 if pixels > 32 else 2

    def tiles() -> int:
        return -(-cog // (wm * tm)) * -(-pixels // (wn * tn)) * planes

    if tiles() < units:
        tn = 2
    if tiles() < units:
        tm = 2
    split = 1
    while split < MAX_SPLIT and tiles() * split < units and depth // (split * 2) >= 4 * bk:
        split *= 2
    return {"MODE": "igemm", "TM": tm, "TN": tn, "WM": wm, "WN": wn, "BK": bk, "SPLIT": split}


def candidates(workload: dict, ctx: PlanContext) -> list[dict]:
    """The igemm configs worth timing for a conv2d workload on a GPU (conv.py's knob space adds them)."""
    cog, pixels = workload["Co"], workload["H"] * workload["W"]
    depth = workload["C"] * workload["KH"] * workload["KW"]
    found = []
    for tm in (2, 4, 8):
        for tn in (2, 4, 8):
            for wm, wn in GROUP_SHAPES:
                if wm * tm > 2 * max(cog, 16) or wn * tn > 2 * max(pixels, 16):
                    continue
                for bk in (8, 16):
                    for split in (1, 2, 4, 8, 16):
                        if split > 1 and depth // split < 2 * bk:
                            continue
                        config = {"MODE": "igemm", "TM": tm, "TN": tn, "WM": wm, "WN": wn, "BK": bk, "SPLIT": split}
                        if tile_shortfall(config, ctx.max_work_group_size) is None:
                            found.append(config)
    return found


def plan_igemm(ctx, node, weights, bias, z, y, dims, groups, strides, pads, dilations, tail, config, source):
    """The conv_gemm launch (and, with SPLIT > 1, the conv_gemm_sum launch) of one convolution."""
    shortfall = tile_shortfall(config, ctx.max_work_group_size)
    if shortfall:
        raise NoKernel(f"conv_gemm config {config}: {shortfall}")
    n, c, h, w, co, ho, wo = dims
    kh, kw = weights.shape[2:]
    cig, cog = c // groups, co // groups
    depth, pixels, planes = cig * kh * kw, ho * wo, n * groups
    tm, tn, wm, wn, bk, split = (int(config[key]) for key in ("TM", "TN", "WM", "WN", "BK", "SPLIT"))
    rows, cols = wm * tm, wn * tn
    padded_m = -(-cog // rows) * rows
    slice_depth = -(-depth // split)
    k_chunk = -(-slice_depth // bk) * bk  # a slice: whole tiles
    # [G][Cog][Cig][KH][KW] -> [G][Kp][Mp]: zero rows past K and zero channels past Cog (module docstring).
    packed = np.zeros((groups, k_chunk * split, padded_m), np.float32)
    packed[:, :depth, :cog] = weights.astype(np.float32).reshape(groups, cog, depth).transpose(0, 2, 1)
    geometry = [i32(c), i32(h), i32(w), i32(wo), i32(pixels), i32(groups), i32(cig), i32(cog), i32(planes),
                i32(padded_m), i32(depth), i32(k_chunk), i32(pads[0]), i32(pads[1])]  # fmt: skip
    defines = {"TM": tm, "TN": tn, "WM": wm, "WN": wn, "BK": bk, "SPLIT": split, "KH": kh, "KW": kw,
               "SH": strides[0], "SW": strides[1], "DH": dilations[0], "DW": dilations[1]}  # fmt: skip
    work = (-(-pixels // cols) * wn, padded_m // rows * wm, planes * split)
    local = (wn, wm, 1)
    config = {**config, "local": list(local)}
    x = TensorArg(node.inputs[0])
    bias = np.asarray(bias, np.float32)
    if split == 1:
        args = [x, packed, bias, z, TensorArg(y), *geometry, *tail]
        launch = Launch("conv_gemm", "conv_gemm", args, work, local, defines, Epilogue(3, 4, 5 + len(geometry)))
        plan = KernelPlan("conv2d", config, source, [launch])
    else:
        partials = ScratchArg(split * planes * cog * pixels)
        args = [x, packed, bias, partials, partials, *geometry, *tail]
        gemm = Launch("conv_gemm", "conv_gemm", args, work, local, defines)
        sums = [i32(pixels), i32(cog), i32(planes), i32(groups), i32(split)]
        sum_work = (pixels, cog, planes)
        sum_local = local_size(sum_work, (64, 4, 1), ctx.max_work_group_size)
        add = Launch("conv_gemm", "conv_gemm_sum", [partials, bias, z, TensorArg(y), *sums, *tail], sum_work,
                     sum_local, {}, Epilogue(2, 3, 4 + len(sums)))  # fmt: skip
        plan = KernelPlan("conv2d", config, source, [gemm, add])
    shortfall = ctx.whole_group_shortfall(plan.launches[0])
    if shortfall:
        raise NoKernel(shortfall)
    return plan
