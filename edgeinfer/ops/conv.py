"""Conv and ConvTranspose: the arithmetic that dominates every CNN, so the NumPy forms are built for speed.

How a 2-D convolution is computed (batch item by batch item):

* 1x1 kernel, stride 1, no padding: one BLAS sgemm ``W (Cout, Cin) @ X (Cin, H*W)``.
* every other kernel reads its input through *shifted planes* (:func:`shifted_planes`): the padded
  input, split into ``stride x stride`` phases, each flattened with a row width ``Wq`` a little wider
  than the output. A kernel tap is then one contiguous slice of a plane, so a tap costs one long NumPy
  loop instead of one per output row. Results come out ``Wq`` wide and the extra columns are dropped
  when the bias is added.
* depthwise (``group == Cin``): im2col per channel and a BLAS matrix-vector product per channel.
* few input rows per output channel (a stem conv, ``Cin * K <= Cout``): im2col at the output width.
* anything else: im2col (one copy per tap into a scratch buffer) and one sgemm per group.

This module is the plain NCHW reference (constant folding, the OpenCL host fallback, the tests); the NumPy
backend's channels-last forms live in :mod:`edgeinfer.backends.numpy` and fall back to :func:`conv2d` here.

The fused form (see docs/architecture.md) adds an optional residual input ``Z`` and an activation;
bias, residual and activation are applied in place on the output. Scratch buffers are cached per
thread, so a model run allocates only its outputs and successive layers reuse cache-warm memory.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from edgeinfer.ops.activations import apply_activation
from edgeinfer.ops.buffers import filled_buffer, scratch
from edgeinfer.ops.registry import register

# Depthwise im2col block size in elements (about 1 MiB of float32: one core's L2 cache on the dev machine).
DW_BLOCK_FLOATS = 1 << 18


def resolve_pads(
    attrs: dict[str, Any],
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) with ``auto_pad`` applied (the frontend already does; tests don't)."""
    n = len(in_shape)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else big)
            ends.append(big if auto_pad == "SAME_UPPER" else small)
        return begins + ends
    if auto_pad == "VALID":
        return [0] * (2 * n)
    return [int(p) for p in attrs.get("pads", [0] * (2 * n))]


def window_attrs(
    attrs: dict[str, Any], in_shape: Sequence[int], kernel: Sequence[int] | None = None
) -> tuple[list[int], list[int], list[int], list[int]]:
    """``(kernel, strides, dilations, pads)`` of a Conv/Pool node, with ONNX defaults."""
    n = len(in_shape)
    kernel = [int(k) for k in attrs.get("kernel_shape", kernel)]
    strides = [int(s) for s in attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * n)]
    return kernel, strides, dilations, resolve_pads(attrs, in_shape, kernel, strides, dilations)


def shifted_planes(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    out_hw: tuple[int, int],
    fill: float = 0.0,
) -> tuple[np.ndarray, list[tuple[int, int]], int]:
    """Lay out a padded (C, H, W) image so that every kernel tap reads one contiguous slice.

    Returns ``(planes, taps, Wq)``: ``planes`` has shape (phases, C, plane_len); for tap t (row-major over
    the kernel), ``planes[p][:, off:off + Ho * Wq]`` with ``(p, off) = taps[t]`` holds, for every output
    position (i, j < Wq), the input that tap multiplies; columns ``j >= Wo`` are scratch. Strided
    windows use one phase per (row, column) remainder of the stride, so slices stay contiguous.
    Padding is ``fill`` (0 for Conv/AveragePool, -inf for MaxPool). The buffer is cached: do not keep it.
    """
    c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = kernel, strides, dilations, pads[:2]
    ho, wo = out_hw
    rows = [(ki * dh % sh, ki * dh // sh) for ki in range(kh)]
    cols = [(kj * dw % sw, kj * dw // sw) for kj in range(kw)]
    row_phases = sorted({a for a, _ in rows})
    col_phases = sorted({b for b, _ in cols})
    hq = ho + max(di for _, di in rows)
    wq = wo + max(dj for _, dj in cols)
    plane_len = hq * wq + max(dj for _, dj in cols)
    key = ("planes", x.shape, tuple(kernel), tuple(strides), tuple(dilations), tuple(pads[:2]), out_hw)
    planes = filled_buffer(key, (len(row_phases) * len(col_phases), c, plane_len), x.dtype, fill)
    for ia, a in enumerate(row_phases):
        m0, m1 = max(0, -((a - pt) // sh)), min(hq, (h - 1 + pt - a) // sh + 1)
        for ib, b in enumerate(col_phases):
            n0, n1 = max(0, -((b - pl) // sw)), min(wq, (w - 1 + pl - b) // sw + 1)
            if m1 > m0 and n1 > n0:
                r0, c0 = a + sh * m0 - pt, b + sw * n0 - pl
                dst = planes[ia * len(col_phases) + ib, :, : hq * wq].reshape(c, hq, wq)
                src = x[:, r0 : r0 + sh * (m1 - m0 - 1) + 1 : sh, c0 : c0 + sw * (n1 - n0 - 1) + 1 : sw]
                dst[:, m0:m1, n0:n1] = src
    taps = [
        (row_phases.index(a) * len(col_phases) + col_phases.index(b), di * wq + dj) for a, di in rows for b, dj in cols
    ]
    return planes, taps, wq


def out_size(size: int, k: int, s: int, d: int, pad_begin: int, pad_end: int, ceil_mode: bool = False) -> int:
    """Output length of a window sliding over one padded axis (ceil_mode: last window starts inside)."""
    span = size + pad_begin + pad_end - ((k - 1) * d + 1)
    if not ceil_mode:
        return span // s + 1
    n = -(-span // s) + 1
    return n - 1 if (n - 1) * s >= size + pad_begin else n


def _finish(acc: np.ndarray, wq: int, y: np.ndarray, bias: np.ndarray | None) -> None:
    """Copy the ``Wq``-wide result ``acc`` (M, Ho * Wq) into ``y`` (M, Ho, Wo), adding the bias on the way."""
    m, ho, wo = y.shape
    src = acc.reshape(m, ho, wq)[:, :, :wo]
    if bias is not None:
        np.add(src, bias[:, None, None], out=y)
    elif not np.shares_memory(src, y):
        np.copyto(y, src)


def _gather_taps(planes: np.ndarray, taps: list[tuple[int, int]], cols: np.ndarray) -> None:
    """im2col: ``cols[c, t] = planes[p_t][c, off_t : off_t + L]``, one strided copy when there is one phase."""
    c, k, length = cols.shape
    offsets = [off for _, off in taps]
    if planes.shape[0] == 1 and k > 1:
        # taps at offsets i * row_step + j * col_step: a 4-D strided view copies them all in one call
        kw = next((t for t in range(1, k) if offsets[t] - offsets[t - 1] != offsets[1] - offsets[0]), k)
        kh, col_step = k // kw, offsets[1] - offsets[0]
        row_step = offsets[kw] - offsets[0] if kh > 1 else 0
        if offsets == [offsets[0] + i * row_step + j * col_step for i in range(kh) for j in range(kw)]:
            st, ct = planes.strides, cols.strides
            view = as_strided(
                planes[0, :, offsets[0] :], (c, kh, kw, length), (st[1], row_step * st[2], col_step * st[2], st[2])
            )
            np.copyto(as_strided(cols, (c, kh, kw, length), (ct[0], kw * ct[1], ct[1], ct[2])), view)
            return
    for t, (p, off) in enumerate(taps):
        cols[:, t] = planes[p][:, off : off + length]


def _depthwise(planes: np.ndarray, taps: list[tuple[int, int]], w: np.ndarray, acc: np.ndarray) -> None:
    """Depthwise: im2col per channel, then one batched matmul ``w[c] (mult, K) @ cols[c] (K, L)``.

    The copy plus a BLAS matrix-vector product per channel beats one NumPy multiply and add per tap by
    1.5-2.5x on MobileNetV2's layers, because NumPy has no fused multiply-add. Channels go in blocks whose
    im2col buffer fits in the L2 cache, so the copy is read back from cache. (Splitting the channels over
    two Python threads did not make MobileNetV2 faster, with one or two OpenBLAS threads.)
    """
    c, mult, k = w.shape
    length = acc.shape[1]
    out = acc.reshape(c, mult, length)
    block = max(1, DW_BLOCK_FLOATS // (k * length))
    cols = scratch("dw_cols", (min(c, block), k, length), acc.dtype)
    for c0 in range(0, c, block):
        c1 = min(c, c0 + block)
        _gather_taps(planes[:, c0:c1], taps, cols[: c1 - c0])
        np.matmul(w[c0:c1], cols[: c1 - c0], out=out[c0:c1])


def _im2col_gemm(planes: np.ndarray, taps: list[tuple[int, int]], w: np.ndarray, group: int, acc: np.ndarray) -> None:
    """``acc (M, L) = W (M, C/g * K) @ cols (C * K, L)`` per group; a 1-tap kernel multiplies its plane directly."""
    c = planes.shape[1]
    length = acc.shape[1]
    if len(taps) == 1:
        p, off = taps[0]
        cols = planes[p][:, off : off + length]
    else:
        cols = scratch("im2col", (c * len(taps), length), acc.dtype)
        _gather_taps(planes, taps, cols.reshape(c, len(taps), length))
    w2 = w.reshape(w.shape[0], -1)
    mg, kg = w2.shape[0] // group, w2.shape[1]
    for g in range(group):
        np.matmul(w2[g * mg : (g + 1) * mg], cols[g * kg : (g + 1) * kg], out=acc[g * mg : (g + 1) * mg])


def _pointwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, group: int, y: np.ndarray) -> None:
    """1x1 stride-1 unpadded conv: ``Y (M, HW) = W (M, C) @ X (C, HW)`` per image and group, bias included.

    Where the output is bigger than the input the bias rides in the sgemm (``[W | b] @ [X; 1]``): copying
    X next to a row of ones costs less than a pass over the output.
    """
    n, c, h, wd = x.shape
    m = w.shape[0]
    x3, y3, w2 = x.reshape(n, c, h * wd), y.reshape(n, m, h * wd), w.reshape(m, c // group)
    if group == 1 and bias is not None and c * h * wd + m * c < m * h * wd:
        cols = scratch("pointwise_bias", (c + 1, h * wd), x.dtype)
        cols[c] = 1
        w_bias = np.concatenate((w2, bias[:, None]), axis=1)
        for i in range(n):
            cols[:c] = x3[i]
            np.matmul(w_bias, cols, out=y3[i])
        return
    mg, cg = m // group, c // group
    for g in range(group):
        np.matmul(w2[g * mg : (g + 1) * mg], x3[:, g * cg : (g + 1) * cg], out=y3[:, g * mg : (g + 1) * mg])
    if bias is not None:
        y += bias[:, None, None]


def narrow_im2col_operands(
    planes: np.ndarray,
    taps: list[tuple[int, int]],
    wq: int,
    w: np.ndarray,
    bias: np.ndarray | None,
    out_hw: tuple[int, int],
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """``(cols (C * K [+ 1], Ho * Wo), [W | b] (M, C * K [+ 1]))``: the im2col at the output width of a conv with
    few input rows per output channel (a stem conv), the bias folded in through a row of ones.

    Gathering ``C * K`` rows of ``Wo`` columns is cheaper than trimming ``M`` rows afterwards when ``C * K <= M``.
    The NumPy backend runs the same sgemm transposed (``cols^T @ [W | b]^T``) for a channels-last result: the
    sums keep their (channel, kernel row, kernel column) order, which the QDQ models need.
    """
    c, k = planes.shape[1], len(taps)
    ho, wo = out_hw
    cols = scratch("im2col_narrow", (c * k + 1, ho * wo), dtype)
    cols[-1] = 1
    cols4 = cols[:-1].reshape(c, k, ho, wo)
    for t, (p, off) in enumerate(taps):
        cols4[:, t] = planes[p][:, off : off + ho * wq].reshape(c, ho, wq)[:, :, :wo]
    return (cols if bias is not None else cols[:-1]), weights_with_bias_column(w, bias)


def weights_with_bias_column(w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``[W | b]`` (M, C * K [+ 1]): the sgemm operand whose last column meets :func:`narrow_im2col_operands`' row
    of ones (no column without a bias)."""
    w2 = w.reshape(w.shape[0], -1)
    return w2 if bias is None else np.concatenate((w2, bias[:, None]), axis=1)


def _narrow_im2col(
    planes: np.ndarray, taps: list[tuple[int, int]], wq: int, w: np.ndarray, bias: np.ndarray | None, y: np.ndarray
) -> None:
    """A stem conv of one image by :func:`narrow_im2col_operands`: the sgemm writes ``y`` (M, Ho, Wo) directly."""
    m, ho, wo = y.shape
    cols, w2 = narrow_im2col_operands(planes, taps, wq, w, bias, (ho, wo), y.dtype)
    np.matmul(w2, cols, out=y.reshape((m, ho * wo), copy=False))


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    z: np.ndarray | None,
    group: int,
    window: tuple[list[int], list[int], list[int], list[int]],
    activation: str | None = None,
    activation_params: list[float] | None = None,
) -> np.ndarray:
    """2-D (fused) convolution; dispatches to sgemm, narrow im2col, depthwise or im2col + sgemm."""
    kernel, strides, dilations, pads = window
    n, c, h, wd = x.shape
    m = w.shape[0]
    ho = out_size(h, kernel[0], strides[0], dilations[0], pads[0], pads[2])
    wo = out_size(wd, kernel[1], strides[1], dilations[1], pads[1], pads[3])
    k = kernel[0] * kernel[1]
    narrow = group == 1 and k > 1 and c * k <= m
    y = np.empty((n, m, ho, wo), x.dtype)
    if kernel == [1, 1] and strides == [1, 1] and not any(pads):
        _pointwise(x, w, bias, group, y)
    else:
        depthwise = group == c and group > 1
        for i in range(n):
            planes, taps, wq = shifted_planes(x[i], kernel, strides, dilations, pads, (ho, wo))
            if narrow:
                _narrow_im2col(planes, taps, wq, w, bias, y[i])
                continue
            acc = y[i].reshape(m, ho * wo) if wq == wo else scratch("conv_acc", (m, ho * wq), x.dtype)
            if depthwise:
                _depthwise(planes, taps, w.reshape(c, m // c, k), acc)
            else:
                _im2col_gemm(planes, taps, w, group, acc)
            _finish(acc, wq, y[i], bias)
    _epilogue(y, None, z, activation, activation_params)
    return y


def _conv_generic(
    x: np.ndarray,
    w: np.ndarray,
    group: int,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
) -> np.ndarray:
    """N-D convolution (used for 3-D and up) by a strided im2col view and one matmul per group; no bias."""
    n, c = x.shape[:2]
    nsp = x.ndim - 2
    m = w.shape[0]
    outs = [out_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i]) for i in range(nsp)]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[nsp + i]) for i in range(nsp)])
    y = np.empty((n, m, *outs), x.dtype)
    w2 = w.reshape(m, -1)
    mg, kg = m // group, w2.shape[1]
    for i in range(n):
        st = xp[i].strides
        view = as_strided(
            xp[i],
            (c, *kernel, *outs),
            (st[0], *(st[1 + j] * dilations[j] for j in range(nsp)), *(st[1 + j] * strides[j] for j in range(nsp))),
        )
        cols = view.reshape(c * math.prod(kernel), math.prod(outs))
        yi = y[i].reshape(m, -1)
        for g in range(group):
            np.matmul(w2[g * mg : (g + 1) * mg], cols[g * kg : (g + 1) * kg], out=yi[g * mg : (g + 1) * mg])
    return y


def _epilogue(
    y: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None, activation: str | None, params: Any
) -> None:
    """Fused tail, in place: ``y = activation(y + bias + z)``."""
    if bias is not None:
        y += bias.reshape((-1,) + (1,) * (y.ndim - 2))
    if z is not None:
        np.add(y, z, out=y)
    if activation:
        apply_activation(y, activation, params, out=y)


def optional_input(inputs: list[np.ndarray | None], i: int, dtype: np.dtype) -> np.ndarray | None:
    """Input ``i`` as ``dtype``, or ``None`` where it is omitted."""
    a = inputs[i] if len(inputs) > i else None
    return None if a is None else a.astype(dtype, copy=False)


def check_conv_shapes(x: np.ndarray, w: np.ndarray, group: int) -> None:
    """Raise where a Conv's input and weight do not fit together."""
    if x.ndim < 3 or w.ndim != x.ndim or x.shape[1] != w.shape[1] * group:
        raise ValueError(f"Conv: input {x.shape} and weight {w.shape} do not match (group={group})")


def as_2d_window(window: tuple[list[int], list[int], list[int], list[int]]) -> tuple[list[int], ...]:
    """A 1-D conv's window as a 2-D one with a height of 1 (1-D runs as 2-D)."""
    kernel, strides, dilations, pads = window
    return [1, *kernel], [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]]


@register("Conv")
def conv(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """ONNX Conv (1-D, 2-D, N-D) plus the fused form: optional 4th input Z and ``activation`` attributes."""
    x = inputs[0]
    w = inputs[1].astype(x.dtype, copy=False)
    bias, z = optional_input(inputs, 2, x.dtype), optional_input(inputs, 3, x.dtype)
    group = int(attrs.get("group", 1))
    check_conv_shapes(x, w, group)
    window = window_attrs(attrs, x.shape[2:], w.shape[2:])
    activation, params = attrs.get("activation"), attrs.get("activation_params")
    if x.ndim == 3:
        z4 = None if z is None else z[:, :, None, :]
        y = conv2d(x[:, :, None, :], w[:, :, None, :], bias, z4, group, as_2d_window(window), activation, params)
        return [y[:, :, 0, :]]
    if x.ndim == 4:
        return [conv2d(x, w, bias, z, group, window, activation, params)]
    y = _conv_generic(x, w, group, *window)
    _epilogue(y, bias, z, activation, params)
    return [y]


def _transpose_pads(
    attrs: dict[str, Any],
    in_shape: Sequence[int],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    output_padding: list[int],
) -> list[int]:
    """ConvTranspose pads: explicit, or derived from ``output_shape`` / ``auto_pad`` as the ONNX spec says."""
    n = len(in_shape)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    output_shape = attrs.get("output_shape")
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return [0] * (2 * n) if auto_pad == "VALID" else [int(p) for p in attrs.get("pads", [0] * (2 * n))]
    if output_shape is None:
        output_shape = [size * s for size, s in zip(in_shape, strides)]
    output_shape = [int(v) for v in output_shape][-n:]
    begins, ends = [], []
    for i in range(n):
        total = strides[i] * (in_shape[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
        total -= output_shape[i]
        if auto_pad == "SAME_UPPER":
            begins.append(total // 2)
            ends.append(total - total // 2)
        else:
            begins.append(total - total // 2)
            ends.append(total // 2)
    return begins + ends


@register("ConvTranspose")
def conv_transpose(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """ONNX ConvTranspose (any rank): per group one sgemm ``W^T @ X``, then a scatter-add per kernel tap."""
    x = inputs[0]
    w = inputs[1].astype(x.dtype, copy=False)
    bias = optional_input(inputs, 2, x.dtype)
    group = int(attrs.get("group", 1))
    n, c = x.shape[:2]
    nsp = x.ndim - 2
    in_shape = x.shape[2:]
    if w.shape[0] != c:
        raise ValueError(f"ConvTranspose: weight {w.shape} does not match input {x.shape}")
    kernel = [int(k) for k in attrs.get("kernel_shape", w.shape[2:])]
    strides = [int(s) for s in attrs.get("strides", [1] * nsp)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * nsp)]
    output_padding = [int(p) for p in attrs.get("output_padding", [0] * nsp)]
    pads = _transpose_pads(attrs, in_shape, kernel, strides, dilations, output_padding)
    full = [strides[i] * (in_shape[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(nsp)]
    mg, cg = w.shape[1], c // group
    m = mg * group
    big = np.zeros((n, m, *full), x.dtype)
    x3 = x.reshape(n, c, -1)
    for g in range(group):
        wg = w[g * cg : (g + 1) * cg].reshape(cg, -1)
        cols = np.matmul(wg.T, x3[:, g * cg : (g + 1) * cg]).reshape(n, mg, *kernel, *in_shape)
        for tap in itertools.product(*(range(k) for k in kernel)):
            dst = tuple(
                slice(tap[i] * dilations[i], tap[i] * dilations[i] + strides[i] * (in_shape[i] - 1) + 1, strides[i])
                for i in range(nsp)
            )
            big[(slice(None), slice(g * mg, (g + 1) * mg), *dst)] += cols[(slice(None), slice(None), *tap)]
    if min(pads) < 0:  # output_shape larger than the full result: zeros beyond it
        big = np.pad(big, [(0, 0), (0, 0)] + [(max(0, -pads[i]), max(0, -pads[nsp + i])) for i in range(nsp)])
        full = list(big.shape[2:])
        pads = [max(0, p) for p in pads]
    crop = tuple(slice(pads[i], full[i] - pads[nsp + i]) for i in range(nsp))
    y = np.ascontiguousarray(big[(slice(None), slice(None), *crop)])
    _epilogue(y, bias, None, attrs.get("activation"), attrs.get("activation_params"))
    return [y]
