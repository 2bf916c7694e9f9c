"""Channels-last (NHWC) forms of the 2-D Conv, with which the NumPy backend runs every Conv that has one.

Tensors keep their ONNX (N, C, H, W) shape; only the memory order changes (:mod:`.layout`).

Why channels-last on a CPU without fused multiply-add in NumPy:

* depthwise: with the weights tiled along a row (``(kh, kw, Wo * C)``), one ``np.einsum`` over the
  kernel taps is a single multiply-accumulate pass per tap with an inner loop of ``Wo * C``
  elements: ~6 G taps/s on the Xeon VM against 2-4 for im2col + a matrix-vector product per channel.
* 1x1: ``Y (HW, M) = X (HW, C) @ W^T`` reads and writes the NHWC blocks as they are.
* other kernels: the im2col row of an output pixel is ``kh`` contiguous runs of ``kw * C`` inputs, so
  the copy is one strided ``copyto`` and the bias rides in the sgemm through a column of ones.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.layout import Window, is_channels_last, padded_hwc, strided_view, tap_strides, tap_view
from edgeinfer.backends.numpy.row_padded import RowPadded
from edgeinfer.ops.activations import apply_activation
from edgeinfer.ops.buffers import filled_buffer, scratch

# im2col blocks of at most this many bytes (the L2 cache of one core on the development VM)
IM2COL_BLOCK_BYTES = 2 << 20


def packed(cache: dict | None, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
    """``make()``, kept in the node's ``cache`` (its :class:`~edgeinfer.backends.numpy.kernels.NodeState`) if any.

    The NumPy backend gives a cache to Convs whose weights and bias are graph constants, so weight
    layouts (transposed, with a bias row, tiled along a row) are built on the first run only; direct
    callers with arbitrary weights (tests, constant folding) get no cache and a fresh layout each call.
    """
    if cache is None:
        return make()
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
    return value


def _tile_depthwise(w: np.ndarray, kernel: list[int], wo: int, dtype: np.dtype) -> np.ndarray:
    """Depthwise weights (C, 1, kh, kw) as (kh, kw, Wo, C): every tap's weights repeated along the output row."""
    c = w.shape[0]
    tiled = np.empty((*kernel, wo, c), dtype)
    tiled[...] = w.reshape(c, *kernel).transpose(1, 2, 0)[:, :, None, :]
    return tiled


def row_padded_tiled_weights(
    w: np.ndarray, kernel: list[int], strides: list[int], pad_left: int, width: int, wo: int
) -> np.ndarray:
    """:func:`_tile_depthwise`, zero where a tap falls left or right of the image row (a row-padded input,
    ``edgeinfer.backends.numpy.row_padded``, has no zero columns there)."""
    tiled = _tile_depthwise(w, kernel, wo, np.float32)
    cols = np.arange(wo)[None, :] * strides[1] + np.arange(kernel[1])[:, None] - pad_left  # (kw, Wo)
    tiled[:, (cols < 0) | (cols >= width)] = 0
    return tiled


def _depthwise(
    x: np.ndarray, w: np.ndarray, window: Window, y: np.ndarray, cache: dict | None, row_padded: RowPadded | None = None
) -> None:
    """Depthwise conv of one image, ``x`` (H, W, C) -> ``y`` (Ho, Wo, C), by one einsum over the taps.

    The weights are tiled along the output row so that, at stride 1, einsum's inner loop runs over a
    whole row (``Wo * C`` elements) with one multiply-accumulate per tap.
    """
    kernel, strides, dilations, pads = window
    ho, wo, c = y.shape
    if row_padded is None and strides[1] == 2 and dilations[1] == 1:
        _depthwise_column_phases(x, w, window, y, cache)
        return
    if row_padded is None:
        base = padded_hwc(x, pads, 0.0)  # C-contiguous (H', W', C): the input itself where unpadded
        st = tap_strides(base, window)
        tiled = packed(cache, ("dw_tiled", wo), lambda: _tile_depthwise(w, kernel, wo, y.dtype))
    else:  # taps read the producer's buffer, with zero weights where they wrap round a row end
        base, st = row_padded.tap_source(strides, pads[1])
        tiled = packed(
            cache,
            ("dw_tiled_row_padded", wo),
            lambda: row_padded_tiled_weights(w, kernel, strides, pads[1], x.shape[1], wo),
        )
    if strides[1] == 1:  # (Wo, C) merge into one contiguous run of the row
        rows = strided_view(base, (*kernel, ho, wo * c), (st[0], st[1], st[2], st[4]))
        np.einsum("abhx,abx->hx", rows, tiled.reshape(*kernel, wo * c), out=y.reshape((ho, wo * c), copy=False))
    else:
        np.einsum("abhwc,abwc->hwc", strided_view(base, (*kernel, ho, wo, c), st), tiled, out=y)


def _depthwise_column_phases(x: np.ndarray, w: np.ndarray, window: Window, y: np.ndarray, cache: dict | None) -> None:
    """Depthwise conv at column stride 2: the padded copy splits even and odd columns, so taps run whole rows.

    At stride 2 the taps of neighbouring outputs are two pixels apart, so einsum's inner loop would be
    the ``C`` channels of one pixel (16 floats in YOLOX's first stride-2 layer). With the padded input
    stored as two column phases, tap ``b`` of output ``j`` is pixel ``j + b // 2`` of phase ``b % 2``: each
    phase's taps read ``Wo * C`` contiguous floats per row, one einsum per phase. The copy replaces the
    padded copy the plain path makes anyway.
    """
    kernel, strides, dilations, pads = window
    (kh, kw), (h, wd, c), (ho, wo) = kernel, x.shape, y.shape[:2]
    pt, pl = pads[0], pads[1]
    hp = max(pt + h + pads[2], (ho - 1) * strides[0] + (kh - 1) * dilations[0] + 1)
    wq = max(wo + (kw - 1) // 2, (wd - 1 + pl) // 2 + 1)  # pixels per phase
    phases = filled_buffer(("dw_phases", x.shape, tuple(pads), hp, wq), (hp, 2, wq, c), x.dtype, 0.0)
    for p in range(2):
        first = (p - pl) % 2  # the first input column whose padded column has parity p
        if first < wd:
            start = (first + pl) // 2
            cols = x[:, first::2]
            phases[pt : pt + h, p, start : start + cols.shape[1]] = cols
    tiled = packed(cache, ("dw_tiled", wo), lambda: _tile_depthwise(w, kernel, wo, y.dtype))
    flat, row, item = phases.reshape(-1), 2 * wq * c, phases.itemsize
    out = y.reshape((ho, wo * c), copy=False)
    for p in range(min(2, kw)):
        taps = len(range(p, kw, 2))
        view = strided_view(
            flat[p * wq * c :],
            (kh, taps, ho, wo * c),
            (dilations[0] * row * item, c * item, strides[0] * row * item, item),
        )
        weights = packed(cache, ("dw_phase_weights", wo, p), lambda p=p: np.ascontiguousarray(tiled[:, p::2]))
        if p == 0:
            np.einsum("abhx,abx->hx", view, weights.reshape(kh, taps, wo * c), out=out)
        else:
            part = np.einsum("abhx,abx->hx", view, weights.reshape(kh, taps, wo * c))
            np.add(out, part, out=out)


def _native_depthwise(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    window: Window,
    y: np.ndarray,
    cache: dict | None,
    activation: tuple[int, float, float],
) -> None:
    """Depthwise conv of one image by the native kernel: taps, bias and the activation in one pass, no padded
    copy; ``activation`` from :func:`native_kernels.activation_kind`."""
    if not native_kernels.fits(x):
        x = np.ascontiguousarray(x)
    kernel = window[0]
    weights = packed(
        cache, "dw_native", lambda: np.ascontiguousarray(w.reshape(w.shape[0], -1).T, np.float32).reshape(*kernel, -1)
    )
    native_kernels.depthwise(x, weights, bias, y, window, activation, cache)


def _with_bias_row(w_t: np.ndarray, bias: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """``[W^T; b]``: the (K + 1, M) sgemm operand whose last row meets the column of ones."""
    k, m = w_t.shape
    weights = np.empty((k + 1, m), dtype)
    weights[:k] = w_t
    weights[k] = 0 if bias is None else bias
    return weights


def _im2col_gemm(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    window: Window,
    y: np.ndarray,
    cache: dict | None,
    native: bool = False,
) -> None:
    """Group-1 conv of one image, ``x`` (H, W, C) -> ``y`` (Ho, Wo, M): im2col rows, then one sgemm.

    Columns are ordered (kernel row, kernel column, channel), so a kernel row of one pixel is one
    contiguous run of ``kw * C`` inputs; a last column of ones carries the bias (if any) through the sgemm.
    A big im2col goes in blocks of output rows that fit the L2 cache (``IM2COL_BLOCK_BYTES``): YOLOX's
    first conv (12 -> 16 channels at 208x208) would write and read back 19 MB from memory otherwise.
    ``native``: the native kernel gathers the rows straight from ``x``, padding included (no padded copy).
    """
    kernel, _, _, pads = window
    ho, wo, m = y.shape
    c = w.shape[1]
    k = c * kernel[0] * kernel[1]
    native = native and native_kernels.im2col_fits(x)
    taps = None if native else tap_view(padded_hwc(x, pads, 0.0), window, (ho, wo))
    width = k + (bias is not None)
    rows = max(1, min(ho, IM2COL_BLOCK_BYTES // (wo * width * y.itemsize)))
    cols = scratch("im2col_hwc", (rows * wo, width), y.dtype)
    if bias is not None and not native:
        cols[:, k] = 1
    s = cols.strides[1]

    def pack() -> np.ndarray:  # (kernel row, kernel column, channel) x M, plus the bias row
        w_t = w.transpose(2, 3, 1, 0).reshape(k, m)
        return np.ascontiguousarray(w_t) if bias is None else _with_bias_row(w_t, bias, y.dtype)

    weights = packed(cache, "im2col_hwc", pack)
    for r0 in range(0, ho, rows):
        n = min(rows, ho - r0)
        block = cols[: n * wo]
        if native:
            native_kernels.im2col(x, block.reshape(n, wo, width), window, r0, False, bias is not None, cache)
        else:
            dst = strided_view(block, (n, wo, *kernel, c), (width * wo * s, width * s, kernel[1] * c * s, c * s, s),
                               True)  # fmt: skip
            np.copyto(dst, taps[:, :, r0 : r0 + n].transpose(2, 3, 0, 1, 4))
        np.matmul(block, weights, out=y[r0 : r0 + n].reshape((n * wo, m), copy=False))


def _pointwise(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, y: np.ndarray, cache: dict | None, native: bool = False
) -> bool:
    """1x1 stride-1 unpadded conv of all images: ``Y (NHW, M) = X (NHW, C) @ W^T``; True if the bias is in.

    Where the output has more channels than the input (an expansion) and many pixels, the bias rides in
    the sgemm (``[X | 1] @ [W^T; b]``): copying X next to a column of ones and the weights next to the
    bias then costs less than a pass over Y (16 -> 96 channels at 112x112: 0.44 against 0.59 ms).
    """
    n, h, wd, m = y.shape
    c = x.shape[1]
    x2 = x.transpose(0, 2, 3, 1).reshape(n * h * wd, c)
    y2 = y.reshape((n * h * wd, m), copy=False)
    if native or bias is None or m <= c or n * h * wd < 8 * (c + 1):  # (the native epilogue adds it for free)
        np.matmul(x2, w.reshape(m, c).T, out=y2)
        return False
    cols = scratch("pointwise_hwc", (n * h * wd, c + 1), y.dtype)
    cols[:, :c] = x2
    cols[:, c] = 1
    weights = packed(cache, "pointwise_hwc", lambda: _with_bias_row(w.reshape(m, c).T, bias, y.dtype))
    np.matmul(cols, weights, out=y2)
    return True


def _bias_rows(bias: np.ndarray, p: int) -> np.ndarray:
    """The bias tiled over ``reps`` pixels, ``reps`` a divisor of ``p`` near ``4096 / M`` (1 for ``M >= 128``)."""
    m = bias.shape[0]
    reps = 1 if m >= 128 else next(r for r in range(max(1, min(p, 4096 // m)), 0, -1) if p % r == 0)
    return np.tile(bias, reps)


def add_channel_bias(y: np.ndarray, bias: np.ndarray, cache: dict | None = None) -> None:
    """``y (P, M) += bias`` in place, with the bias tiled over several pixels so the inner loop is long.

    Broadcasting a short bias row makes NumPy run one inner loop of ``M`` elements per pixel, which
    costs more than the additions themselves for ``M`` of 16-96. ``cache`` keeps the tiled row.
    """
    p, m = y.shape
    if not y.flags.c_contiguous:
        np.add(y, bias, out=y)
        return
    rows = packed(cache, ("bias_rows", p), lambda: _bias_rows(bias, p))
    flat = y.reshape((p * m // rows.shape[0], rows.shape[0]), copy=False)
    np.add(flat, rows, out=flat)


def fused_epilogue(
    y2: np.ndarray,
    bias: np.ndarray | None,
    z: np.ndarray | None,
    activation: str | None,
    activation_params: list[float] | None,
    cache: dict | None = None,
    native: bool = False,
) -> None:
    """A conv's tail on its channels-last result ``y2`` (pixels, M), in place: ``+ bias`` (where not yet in),
    ``+ Z`` (an NCHW-shaped residual), then the activation; one pass with the ``native`` kernel (tanh then
    runs after it), a pass per step in NumPy."""
    if native and native_kernels.runs_epilogue(y2.size, bias is not None, z is not None, activation):
        z2 = None if z is None else z.transpose(0, 2, 3, 1).reshape(y2.shape)
        kind = native_kernels.activation_kind(activation, activation_params)
        if native_kernels.fits(y2, z2, bias):
            native_kernels.epilogue(y2, bias, z2, kind or (0, -np.inf, np.inf), cache)
            if kind is None:
                apply_activation(y2, activation, activation_params, out=y2)
            return
    if bias is not None:
        add_channel_bias(y2, bias, cache)
    if z is not None:
        np.add(y2, z.transpose(0, 2, 3, 1).reshape(y2.shape), out=y2)
    if activation:
        apply_activation(y2, activation, activation_params, out=y2)


def conv2d_channels_last(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    z: np.ndarray | None,
    group: int,
    window: Window,
    out_hw: tuple[int, int],
    attrs: dict[str, Any],
    native: bool,
    cache: dict | None,
    out: np.ndarray | None = None,
    row_padded: RowPadded | None = None,
) -> np.ndarray | None:
    """2-D (fused) Conv with a channels-last result, or ``None`` where no channels-last form applies.

    ``native``: use the native kernels where they run; ``cache``: the node's, for packed weights and native
    call arguments; ``out``: an NHWC block (or a channel range of one) an executor plan chose for the result;
    ``row_padded``: the :class:`~edgeinfer.backends.numpy.row_padded.RowPadded` buffer that ``x`` lies in.

    Covers 1x1 stride-1 convs, depthwise convs with one output per channel and group-1 convs; the
    caller runs the rest: grouped convs and depthwise with a channel multiplier in NCHW, and "narrow"
    stem convs of an NCHW input (``C * K <= M``, MobileNetV2's) through the NCHW-ordered im2col, which is
    faster there (0.79 against 1.23 ms) and sums in onnxruntime's order, which the rounding-sensitive QDQ
    models need (with the NHWC order 9 of 1001 uint8 outputs moved); it still returns channels-last.
    """
    kernel, strides, _, pads = window
    n, c = x.shape[:2]
    m = w.shape[0]
    pointwise = kernel == [1, 1] and strides == [1, 1] and not any(pads) and group == 1
    depthwise = group == c == m and group > 1
    narrow_stem = not is_channels_last(x) and c * kernel[0] * kernel[1] <= m  # NCHW's narrow im2col is better
    if not (pointwise or depthwise or (group == 1 and not narrow_stem)):
        return None
    ho, wo = out_hw
    native = native and native_kernels.available() and x.dtype == np.float32
    declined = native_kernels.declines("depthwise", x.shape[2:], out_hw, window) if depthwise and native else None
    native_depthwise = depthwise and native and declined is None
    native_im2col = (
        native
        and not (pointwise or depthwise)
        and native_kernels.declines("im2col", x.shape[2:], out_hw, window) is None
    )
    kind = native_kernels.activation_kind(attrs.get("activation"), attrs.get("activation_params"))
    whole_in_kernel = native_depthwise and z is None and kind is not None  # taps + bias + activation
    takes_out = out is not None and (pointwise or not depthwise or (native_depthwise and native_kernels.fits(out)))
    y = out if takes_out else np.empty((n, ho, wo, m), x.dtype)
    if native and bias is not None:
        bias = packed(cache, "bias_f32", lambda: np.ascontiguousarray(bias, np.float32))
    if pointwise:  # (the bias rides in the sgemm unless the native epilogue adds it)
        tail = native and native_kernels.runs_epilogue(y.size, bias is not None, z is not None, attrs.get("activation"))
        folded = _pointwise(x, w, bias, y, cache, tail)
    else:
        folded = not depthwise or native_depthwise
        for i in range(n):
            xi = x[i].transpose(1, 2, 0)
            if native_depthwise:
                _native_depthwise(xi, w, bias, window, y[i], cache, kind if whole_in_kernel else (0, -np.inf, np.inf))
            elif depthwise:
                _depthwise(xi, w, window, y[i], cache, row_padded)
            else:
                _im2col_gemm(xi, w, bias, window, y[i], cache, native_im2col)
    if not whole_in_kernel:
        y2 = y.reshape((n * ho * wo, m), copy=False)
        fused_epilogue(y2, None if folded else bias, z, attrs.get("activation"), attrs.get("activation_params"),
                       cache, native)  # fmt: skip
    if out is not None and y is not out:
        np.copyto(out, y)
        y = out
    return y.transpose(0, 3, 1, 2)
