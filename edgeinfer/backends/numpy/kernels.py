"""The NumPy backend's own kernels for Conv, MaxPool and Concat: channels-last where a form exists, the native
kernels where they run, and the plain NCHW reference of :mod:`edgeinfer.ops` for everything else.

A kernel takes the node's inputs, its ONNX attributes and its :class:`NodeState` (what the backend chose for
the node at prepare time); a Conv also takes where an executor plan wants its result (``out``) or reads its
input from (``row_padded``). Every other op runs as :mod:`edgeinfer.ops` implements it, on whatever layout
its inputs have (the ops accept any strides).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.conv_channels_last import conv2d_channels_last, fused_epilogue, packed
from edgeinfer.backends.numpy.layout import Window, is_channels_last, padded_hwc
from edgeinfer.backends.numpy.row_padded import RowPadded
from edgeinfer.ops import get_op
from edgeinfer.ops.buffers import scratch
from edgeinfer.ops.conv import (
    as_2d_window,
    check_conv_shapes,
    conv2d,
    narrow_im2col_operands,
    optional_input,
    out_size,
    shifted_planes,
    weights_with_bias_column,
    window_attrs,
)
from edgeinfer.ops.pool import lowest_value, max_indices, pool_geometry

Inputs = list[np.ndarray | None]


@dataclass(eq=False)
class NodeState:
    """What the backend chose for one node at prepare time, kept between runs.

    ``native``: run the native kernels where they are loaded and take the geometry. ``cache``: the node's
    packed weight layouts, window geometry and native call arguments, built on the first run; ``None`` where
    they must be rebuilt on every call (a Conv whose weights are not graph constants).
    """

    native: bool = False
    cache: dict | None = None


def _native_narrow_im2col_operands(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, window: Window, out_hw: tuple[int, int], cache: dict | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~edgeinfer.ops.conv.narrow_im2col_operands` of one NCHW image ``x`` (C, H, W) by the native im2col:
    the same rows, gathered straight from ``x`` with the padding as zeros; ``[W | b]`` is packed once per node."""
    c, (ho, wo) = x.shape[0], out_hw
    k = c * window[0][0] * window[0][1]
    cols = scratch("im2col_narrow", (k + (bias is not None), ho * wo), x.dtype)
    view = cols.reshape(-1, ho, wo).transpose(1, 2, 0)  # (Ho, Wo, columns) as the kernel writes them
    native_kernels.im2col(x.transpose(1, 2, 0), view, window, 0, True, bias is not None, cache)
    return cols, packed(cache, "narrow_w_bias", lambda: weights_with_bias_column(w, bias))


def _conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    z: np.ndarray | None,
    group: int,
    window: Window,
    attrs: dict[str, Any],
    state: NodeState,
    out: np.ndarray | None,
    row_padded: RowPadded | None,
) -> np.ndarray:
    """2-D (fused) Conv: channels-last where a form applies, a stem conv of an NCHW input by the NCHW-ordered
    im2col into an NHWC result, the rest (grouped convs, depthwise with a multiplier) by the NCHW reference."""
    kernel, strides, dilations, pads = window
    n, c, h, wd = x.shape
    m = w.shape[0]
    ho = out_size(h, kernel[0], strides[0], dilations[0], pads[0], pads[2])
    wo = out_size(wd, kernel[1], strides[1], dilations[1], pads[1], pads[3])
    y = conv2d_channels_last(x, w, bias, z, group, window, (ho, wo), attrs, state.native, state.cache, out, row_padded)
    if y is not None:
        return y
    activation, params = attrs.get("activation"), attrs.get("activation_params")
    if not (group == 1 and kernel[0] * kernel[1] > 1 and c * kernel[0] * kernel[1] <= m):
        return conv2d(x, w, bias, z, group, window, activation, params)
    # a stem conv reading the NCHW graph input: ``cols^T @ [W | b]^T`` sums in the reference's order
    y_nhwc = out if out is not None and out.flags.c_contiguous else np.empty((n, ho, wo, m), x.dtype)
    native = state.native and native_kernels.available()
    native_im2col = (
        native
        and native_kernels.im2col_fits(x)
        and native_kernels.declines("im2col", (h, wd), (ho, wo), window) is None
    )
    for i in range(n):
        if native_im2col:
            cols, w_bias = _native_narrow_im2col_operands(x[i], w, bias, window, (ho, wo), state.cache)
        else:
            planes, taps, wq = shifted_planes(x[i], kernel, strides, dilations, pads, (ho, wo))
            cols, w_bias = narrow_im2col_operands(planes, taps, wq, w, bias, (ho, wo), x.dtype)
        np.matmul(cols.T, w_bias.T, out=y_nhwc[i].reshape((ho * wo, m), copy=False))
    fused_epilogue(y_nhwc.reshape((n * ho * wo, m), copy=False), None, z, activation, params, None, native)
    return y_nhwc.transpose(0, 3, 1, 2)


def conv(
    inputs: Inputs,
    attrs: dict[str, Any],
    state: NodeState,
    out: np.ndarray | None = None,
    row_padded: RowPadded | None = None,
) -> list[np.ndarray]:
    """ONNX Conv (fused form included); 1-D runs as 2-D with a height of 1, other ranks by the reference.

    ``out``: an NHWC block (or a channel range of one) for the result, which a Conv with a channels-last form
    writes; ``row_padded``: the row-padded buffer that ``inputs[0]`` lies in (both from the executor plans).
    """
    x = inputs[0]
    if x.ndim not in (3, 4):
        return get_op("Conv").fn(inputs, attrs)
    w = inputs[1].astype(x.dtype, copy=False)
    bias, z = optional_input(inputs, 2, x.dtype), optional_input(inputs, 3, x.dtype)
    group = int(attrs.get("group", 1))
    check_conv_shapes(x, w, group)
    cache = state.cache  # (the attributes are parsed once per node and input shape)
    window = None if cache is None else cache.get(("window", x.shape, w.shape))
    if window is None:
        window = window_attrs(attrs, x.shape[2:], w.shape[2:])
        if cache is not None:
            cache[("window", x.shape, w.shape)] = window
    if x.ndim == 3:
        z4 = None if z is None else z[:, :, None, :]
        y = _conv2d(x[:, :, None, :], w[:, :, None, :], bias, z4, group, as_2d_window(window), attrs, state, None, None)
        return [y[:, :, 0, :]]
    return [_conv2d(x, w, bias, z, group, window, attrs, state, out, row_padded)]


def _max_pool_channels_last(
    x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int], pads: list[int], outs: list[int]
) -> np.ndarray:
    """2-D MaxPool of a channels-last ``x`` with a channels-last result, separably on the NHWC blocks.

    First the maximum down each kernel column over whole padded rows (``Wp * C`` contiguous), which
    already drops the rows the stride skips, then along each kernel row on that smaller block through
    strided column views (inner loop: the ``C`` channels). In this order SqueezeNet's first 3x3
    stride-2 pool takes 0.43 ms against 0.49 for columns first.
    """
    n, c = x.shape[:2]
    (ho, wo), (kh, kw), (sh, sw), (dh, dw) = outs, kernel, strides, dilations
    need = ((ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1)
    y = np.empty((n, ho, wo, c), x.dtype)
    for i in range(n):
        xp = padded_hwc(x[i].transpose(1, 2, 0), pads, lowest_value(x.dtype), need)
        rows = [xp[a * dh : a * dh + (ho - 1) * sh + 1 : sh, : need[1]] for a in range(kh)]
        along = rows[0]
        if kh > 1:
            along = np.maximum(rows[0], rows[1], out=scratch("pool_hwc", rows[0].shape, x.dtype))
            for row in rows[2:]:
                np.maximum(along, row, out=along)
        cols = [along[:, b * dw : b * dw + (wo - 1) * sw + 1 : sw] for b in range(kw)]
        if kw == 1:
            np.copyto(y[i], cols[0])
            continue
        np.maximum(cols[0], cols[1], out=y[i])
        for col in cols[2:]:
            np.maximum(y[i], col, out=y[i])
    return y.transpose(0, 3, 1, 2)


def max_pool(inputs: Inputs, attrs: dict[str, Any], state: NodeState) -> list[np.ndarray]:
    """ONNX MaxPool; a channels-last input gets a channels-last result, by the native kernel where it runs."""
    x = inputs[0]
    if not is_channels_last(x):
        return get_op("MaxPool").fn(inputs, attrs)
    kernel, strides, dilations, pads, outs = pool_geometry(x, attrs)
    window = (kernel, strides, dilations, pads)
    native = state.native and x.dtype == np.float32 and native_kernels.available()
    if native and native_kernels.declines("max_pool", x.shape[2:], outs, window) is None:
        y = np.empty((x.shape[0], *outs, x.shape[1]), x.dtype)
        for i in range(x.shape[0]):
            native_kernels.max_pool(x[i].transpose(1, 2, 0), y[i], window, state.cache)
        y = y.transpose(0, 3, 1, 2)
    elif math.prod(outs) > 1:
        y = _max_pool_channels_last(x, kernel, strides, dilations, pads, outs)
    else:
        return get_op("MaxPool").fn(inputs, attrs)
    if int(attrs.get("num_outputs", 1)) < 2:
        return [y]
    return [y, max_indices(x, kernel, strides, dilations, pads, outs, int(attrs.get("storage_order", 0)))]


def concat(inputs: Inputs, attrs: dict[str, Any], state: NodeState) -> list[np.ndarray]:
    """ONNX Concat; channel concatenations of channels-last tensors stay channels-last (a C-ordered result would
    make every later reader transpose). ``state`` is not read: a Concat has no choices to keep."""
    xs = [x for x in inputs if x is not None]
    if int(attrs["axis"]) % xs[0].ndim == 1 and all(is_channels_last(x) for x in xs):
        n, _, h, w = xs[0].shape
        out = np.empty((n, h, w, sum(x.shape[1] for x in xs)), np.result_type(*xs)).transpose(0, 3, 1, 2)
        return [np.concatenate(xs, axis=1, out=out)]
    return get_op("Concat").fn(inputs, attrs)


# ONNX op -> the backend's kernel; every other op runs as edgeinfer.ops implements it
KERNELS: dict[str, Callable[..., list[np.ndarray]]] = {"Conv": conv, "MaxPool": max_pool, "Concat": concat}
