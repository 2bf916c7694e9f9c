"""Checks of the sliding-window ops (Conv, ConvTranspose, MaxPool, AveragePool, the global pools).

These feed the native C kernels and the OpenCL templates their geometry, so everything the ONNX op
definitions require is enforced: a kernel rank matching the input, positive kernel sizes, strides and
dilations, non-negative pads that stay within bounds, ``group`` dividing the channels, weight, bias and
residual shapes that fit, a fused activation the runtime knows with its parameters, and an output shape
that is the one the op computes.
"""

from __future__ import annotations

import math

from edgeinfer.activations import BY_NAME, FUSED
from edgeinfer.ops.conv import out_size
from edgeinfer.validation.context import FLOATS, NodeCheck, Shape, bounded, rule
from edgeinfer.validation.header import MAX_DIM

_WINDOW = "auto_pad kernel_shape strides dilations pads"


def _geometry(c: NodeCheck, spatial: Shape, kernel: list[int] | None) -> tuple[list[int], ...]:
    """``(kernel, strides, dilations, pads)`` with ONNX defaults, each checked against the spatial rank."""
    n = len(spatial)
    if c.attrs.get("auto_pad", "NOTSET") != "NOTSET":
        c.fail("attribute 'auto_pad'", "'NOTSET' (the compiler expands auto_pad into pads)", c.attrs["auto_pad"])
    kernel = c.ints("kernel_shape", kernel, n, 1, MAX_DIM)
    strides = c.ints("strides", [1] * n, n, 1, MAX_DIM)
    dilations = c.ints("dilations", [1] * n, n, 1, MAX_DIM)
    pads = c.ints("pads", [0] * (2 * n), 2 * n, 0, MAX_DIM)
    return kernel, strides, dilations, pads


def _check_pads(c: NodeCheck, spatial: Shape, kernel: list[int], dilations: list[int], pads: list[int]) -> None:
    """A pad larger than both the input and the dilated kernel only adds outputs that see nothing but padding."""
    n = len(spatial)
    for i in range(n):
        extent = (kernel[i] - 1) * dilations[i] + 1
        limit = max(spatial[i], extent)
        if pads[i] > limit or pads[n + i] > limit:
            c.fail(
                "attribute 'pads'", f"at most {limit} on spatial axis {i} (input {spatial[i]}, kernel {extent})", pads
            )


def _outputs(c: NodeCheck, spatial: Shape, geometry: tuple[list[int], ...], ceil_mode: bool = False) -> list[int]:
    kernel, strides, dilations, pads = geometry
    n = len(spatial)
    outs = []
    for i in range(n):
        extent = (kernel[i] - 1) * dilations[i] + 1
        if spatial[i] + pads[i] + pads[n + i] < extent:
            c.fail(
                "attribute 'kernel_shape'", f"no larger than the padded input on axis {i} ({spatial[i]} + pads)", kernel
            )
        outs.append(out_size(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[n + i], ceil_mode))
    return outs


def _activation(c: NodeCheck) -> None:
    """``activation`` (a name the runtime implements) and its ``activation_params`` (numbers, as many as it takes)."""
    name = c.attrs.get("activation")
    params = c.attrs.get("activation_params")
    if name is None:
        if params is not None:
            c.fail("attribute 'activation_params'", "absent when there is no 'activation'", params)
        return
    c.str("activation", "", FUSED)
    if params is None:
        return
    most = len(BY_NAME[name].params)
    ok = isinstance(params, list) and len(params) <= most and all(type(p) in (int, float) for p in params)
    # clip bounds may be infinite (an omitted min or max); other parameters are finite
    ok = ok and all(not math.isnan(p) and (name == "clip" or math.isfinite(p)) for p in params)
    if not ok:
        c.fail("attribute 'activation_params'", f"a list of at most {most} numbers for {name!r}", params)


@rule("Conv", inputs=(2, 4), attrs=f"{_WINDOW} group activation activation_params")
def conv(c: NodeCheck) -> list:
    """Conv (opset 11): X [N, C, D...], W [M, C/group, k...], B [M]; fused form: Z (the output's shape), activation."""
    x = c.need_rank(0, 3)
    dt = c.need_dtype(0, FLOATS)
    w = c.need_rank(1, len(x), len(x))
    c.need_dtype(1, FLOATS)
    group = c.int("group", 1, 1, MAX_DIM)
    if x[1] != w[1] * group:
        c.fail("attribute 'group'", f"such that input channels {x[1]} = weight channels {w[1]} x group", group)
    if w[0] % group:
        c.fail("attribute 'group'", f"a divisor of the {w[0]} output channels", group)
    geometry = _geometry(c, x[2:], list(w[2:]))
    if geometry[0] != list(w[2:]):
        c.fail("attribute 'kernel_shape'", f"the weight's spatial shape {list(w[2:])}", geometry[0])
    _check_pads(c, x[2:], geometry[0], geometry[2], geometry[3])
    out = bounded(c, (x[0], w[0], *_outputs(c, x[2:], geometry)), "output shape")
    if c.has(2) and c.shape(2) != (w[0],):
        c.fail("input 2 (bias) shape", f"[{w[0]}]", list(c.shape(2)))
    if c.has(3) and c.shape(3) != out:
        c.fail("input 3 (residual) shape", f"the output shape {list(out)}", list(c.shape(3)))
    _activation(c)
    return [(out, dt)]


@rule("ConvTranspose", inputs=(2, 3), attrs=f"{_WINDOW} group output_padding output_shape activation activation_params")
def conv_transpose(c: NodeCheck) -> list:
    """ConvTranspose (opset 11): X [N, C, D...], W [C, M/group, k...]; output from strides, pads, output_padding."""
    x = c.need_rank(0, 3)
    dt = c.need_dtype(0, FLOATS)
    w = c.need_rank(1, len(x), len(x))
    group = c.int("group", 1, 1, MAX_DIM)
    if w[0] != x[1] or x[1] % group:
        c.fail("input 1 (weight) shape", f"[{x[1]}, M/group, ...] with group {group} dividing {x[1]}", list(w))
    n = len(x) - 2
    kernel, strides, dilations, pads = _geometry(c, x[2:], list(w[2:]))
    if kernel != list(w[2:]):
        c.fail("attribute 'kernel_shape'", f"the weight's spatial shape {list(w[2:])}", kernel)
    output_padding = c.ints("output_padding", [0] * n, n, 0, MAX_DIM)
    for i in range(n):
        if output_padding[i] >= max(strides[i], dilations[i]):
            c.fail("attribute 'output_padding'", "smaller than the stride or the dilation on each axis", output_padding)
    full = [strides[i] * (x[2 + i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n)]
    if "output_shape" in c.attrs:
        spatial = c.ints("output_shape", None, None, 1, MAX_DIM)[-n:]
        if len(spatial) != n:
            c.fail("attribute 'output_shape'", f"{n} spatial sizes", c.attrs["output_shape"])
    else:
        spatial = [full[i] - pads[i] - pads[n + i] for i in range(n)]
    if c.has(2) and c.shape(2) != (w[1] * group,):
        c.fail("input 2 (bias) shape", f"[{w[1] * group}]", list(c.shape(2)))
    _activation(c)
    return [(bounded(c, (x[0], w[1] * group, *spatial), "output shape"), dt)]


def _pool(c: NodeCheck, dilations_allowed: bool = True) -> tuple[Shape, str, tuple[list[int], ...]]:
    x = c.need_rank(0, 3)
    dt = c.dtype(0)
    if "kernel_shape" not in c.attrs:
        c.fail("attribute 'kernel_shape'", "present")
    geometry = _geometry(c, x[2:], None)
    kernel, _, dilations, pads = geometry
    n = len(x) - 2
    for i in range(n):  # onnxruntime's rule for pools: each pad smaller than the (dilated) kernel
        extent = (kernel[i] - 1) * dilations[i] + 1
        if pads[i] >= extent or pads[n + i] >= extent:
            c.fail("attribute 'pads'", f"smaller than the kernel extent {extent} on spatial axis {i}", pads)
    outs = _outputs(c, x[2:], geometry, c.flag("ceil_mode"))
    return bounded(c, (x[0], x[1], *outs), "output shape"), dt, geometry


@rule("MaxPool", outputs=(1, 2), attrs=f"{_WINDOW} ceil_mode storage_order num_outputs")
def max_pool(c: NodeCheck) -> list:
    """MaxPool (opset 12): Y and, when the node has a 2nd output (``num_outputs`` 2), int64 Indices."""
    c.need_dtype(0, (*FLOATS, "int8", "uint8"))
    out, dt, _ = _pool(c)
    c.flag("storage_order")
    wanted = 2 if len(c.node.outputs) > 1 and c.node.outputs[1] else 1
    if c.int("num_outputs", 1, 1, 2) != wanted:
        c.fail("attribute 'num_outputs'", f"{wanted} (the node has {wanted} output(s))", c.attrs.get("num_outputs", 1))
    return [(out, dt), (out, "int64")]


@rule("AveragePool", attrs=f"{_WINDOW} ceil_mode count_include_pad")
def average_pool(c: NodeCheck) -> list:
    c.need_dtype(0, FLOATS)
    c.flag("count_include_pad")
    out, dt, _ = _pool(c)
    return [(out, dt)]


@rule("GlobalAveragePool", "GlobalMaxPool")
def global_pool(c: NodeCheck) -> list:
    x = c.need_rank(0, 3)
    return [((x[0], x[1], *[1] * (len(x) - 2)), c.dtype(0))]
