"""MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

2-D pools reuse the conv module's shifted planes, so each step of the (separable) reduction is one
contiguous NumPy maximum/add over all channels (see :func:`edgeinfer.ops.conv.shifted_planes`). Other
ranks, single-window pools (a 7x7 average at the end of a classifier) and the optional MaxPool
``Indices`` output use a strided window view of the padded input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from edgeinfer.ops.buffers import scratch
from edgeinfer.ops.conv import out_size, shifted_planes, window_attrs
from edgeinfer.ops.registry import register


def lowest_value(dtype: np.dtype) -> float | int:
    """The padding value that never wins a maximum."""
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def pool_geometry(x: np.ndarray, attrs: dict[str, Any]) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """``(kernel, strides, dilations, pads, output spatial shape)`` of a pool node."""
    kernel, strides, dilations, pads = window_attrs(attrs, x.shape[2:])
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    nsp = x.ndim - 2
    outs = [
        out_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i], ceil_mode)
        for i in range(nsp)
    ]
    return kernel, strides, dilations, pads, outs


def _pool2d(
    x: np.ndarray,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
    outs: list[int],
    reduce: np.ufunc,
    fill: float | int,
) -> np.ndarray:
    """Max (``np.maximum``) or sum (``np.add``) over each 2-D window, separably.

    Both reductions are separable: first along each kernel row (one result per row phase of the stride,
    shared by the kernel rows of that phase), then down the kernel column. A 3x3 stride-2 window costs
    6 contiguous ufunc calls instead of 8, a 3x3 stride-1 window 4.
    """
    n, c = x.shape[:2]
    ho, wo = outs
    kh, kw = kernel
    y = np.empty((n, c, ho, wo), x.dtype)
    for i in range(n):
        planes, taps, wq = shifted_planes(x[i], kernel, strides, dilations, pads, (ho, wo), fill)
        rows = []  # per kernel row: (row phase key, row shift, [(plane, column shift)])
        for ki in range(kh):
            row = taps[ki * kw : (ki + 1) * kw]
            di = row[0][1] // wq  # the first column tap has no column shift
            rows.append((row[0][0], di, [(p, off - di * wq) for p, off in row]))
        row_len = planes.shape[2] - max(dj for _, _, row in rows for _, dj in row)
        along_rows: dict[int, np.ndarray] = {}
        for key, _, row in rows:
            if key in along_rows:
                continue
            (p0, d0), rest = row[0], row[1:]
            first = planes[p0][:, d0 : d0 + row_len]
            if rest:
                buf = scratch(("pool_rows", key), (c, row_len), x.dtype)
                p1, d1 = rest[0]
                reduce(first, planes[p1][:, d1 : d1 + row_len], out=buf)
                for p, dj in rest[1:]:
                    reduce(buf, planes[p][:, dj : dj + row_len], out=buf)
                first = buf
            along_rows[key] = first
        length = ho * wq
        acc = y[i].reshape(c, length) if wq == wo else scratch("pool_acc", (c, length), x.dtype)
        views = [along_rows[key][:, di * wq : di * wq + length] for key, di, _ in rows]
        if len(views) == 1:
            np.copyto(acc, views[0])
        else:
            reduce(views[0], views[1], out=acc)
            for v in views[2:]:
                reduce(acc, v, out=acc)
        if wq != wo:
            np.copyto(y[i], acc.reshape(c, ho, wq)[:, :, :wo])
    return y


def _windows(
    x: np.ndarray,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
    outs: list[int],
    fill: float | int,
) -> np.ndarray:
    """A read-only (N, C, *outs, *kernel) view of every window over ``x`` padded with ``fill``."""
    nsp = x.ndim - 2
    widths = [(0, 0), (0, 0)]
    for i in range(nsp):
        needed = (outs[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        widths.append((pads[i], max(pads[nsp + i], needed - x.shape[2 + i] - pads[i])))
    xp = np.pad(x, widths, constant_values=fill) if any(a or b for a, b in widths) else x
    st = xp.strides
    return as_strided(
        xp,
        (*x.shape[:2], *outs, *kernel),
        (*st[:2], *(st[2 + i] * strides[i] for i in range(nsp)), *(st[2 + i] * dilations[i] for i in range(nsp))),
        writeable=False,
    )


def _window_counts(
    in_shape: tuple[int, ...],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
    outs: list[int],
    include_pads: bool,
) -> np.ndarray:
    """AveragePool divisors, shape ``outs``: the window elements inside the input (and its explicit pads).

    Elements that ceil_mode adds past the end padding never count, as in onnxruntime and the reference.
    """
    counts = np.ones((), np.int64)
    nsp = len(in_shape)
    for i, (size, k, s, d, o) in enumerate(zip(in_shape, kernel, strides, dilations, outs)):
        pos = np.arange(o)[:, None] * s - pads[i] + np.arange(k)[None, :] * d
        lo, hi = (-pads[i], size + pads[nsp + i]) if include_pads else (0, size)
        counts = np.multiply.outer(counts, ((pos >= lo) & (pos < hi)).sum(axis=1))
    return counts


def max_indices(
    x: np.ndarray,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
    outs: list[int],
    storage_order: int,
) -> np.ndarray:
    """MaxPool ``Indices``: flat position of each maximum in ``x`` (row-major, or column-major per image)."""
    nsp = x.ndim - 2
    win = _windows(x, kernel, strides, dilations, pads, outs, lowest_value(x.dtype))
    flat = win.reshape(*win.shape[: 2 + nsp], -1).argmax(axis=-1)
    taps = np.unravel_index(flat, kernel)
    grids = np.meshgrid(*(np.arange(o) for o in outs), indexing="ij")
    coords = [grids[i] * strides[i] - pads[i] + taps[i] * dilations[i] for i in range(nsp)]
    spatial = x.shape[2:]
    if storage_order == 1:
        index = np.ravel_multi_index(coords[::-1], spatial[::-1])
    else:
        index = np.ravel_multi_index(coords, spatial)
    base = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1], *([1] * nsp)) * math.prod(spatial)
    return (base + index).astype(np.int64)


@register("MaxPool")
def max_pool(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """ONNX MaxPool with ceil_mode and dilations.

    The optional ``Indices`` output costs an argmax over every window, so it is computed only when the
    node says it is read: attribute ``num_outputs`` = 2 (an op function does not see its node's outputs).
    """
    x = inputs[0]
    kernel, strides, dilations, pads, outs = pool_geometry(x, attrs)
    if x.ndim == 4 and math.prod(outs) > 1:
        y = _pool2d(x, kernel, strides, dilations, pads, outs, np.maximum, lowest_value(x.dtype))
    else:
        win = _windows(x, kernel, strides, dilations, pads, outs, lowest_value(x.dtype))
        y = win.max(axis=tuple(range(x.ndim, win.ndim)))
    if int(attrs.get("num_outputs", 1)) < 2:
        return [y]
    return [y, max_indices(x, kernel, strides, dilations, pads, outs, int(attrs.get("storage_order", 0)))]


@register("AveragePool")
def average_pool(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """ONNX AveragePool with ceil_mode, dilations and count_include_pad."""
    x = inputs[0]
    kernel, strides, dilations, pads, outs = pool_geometry(x, attrs)
    if x.ndim == 4 and math.prod(outs) > 1:
        y = _pool2d(x, kernel, strides, dilations, pads, outs, np.add, 0)
    else:
        win = _windows(x, kernel, strides, dilations, pads, outs, 0)
        y = win.sum(axis=tuple(range(x.ndim, win.ndim)), dtype=x.dtype)
    include_pads = bool(attrs.get("count_include_pad", 0))
    y /= _window_counts(x.shape[2:], kernel, strides, dilations, pads, outs, include_pads).astype(x.dtype)
    return [y]


@register("GlobalAveragePool")
def global_average_pool(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Mean over all spatial axes, kept as size-1 axes."""
    x = inputs[0]
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)]


@register("GlobalMaxPool")
def global_max_pool(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Maximum over all spatial axes, kept as size-1 axes."""
    x = inputs[0]
    return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]
