"""The two kernels of kernels/opencl/preprocess.cl written again in NumPy, one output pixel per array element, for
tests that need no device: driven by the shared tables (pipelines/resample_plan.py) they must reproduce PIL's path bit
for bit, and a stand-in CuPy runs them on the exact argument tuples the CUDA pre-processor launches with.

Pointers are flat NumPy arrays (uint8 frame and scratch, int32 tables, float32 LUT, the output's dtype); an index
outside them raises IndexError, which a kernel would have read or written out of bounds."""

from __future__ import annotations

import numpy as np

PRECISION_BITS = 22


def _filter3(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, vertical: bool, taps: np.ndarray,
             weights: np.ndarray, t: np.ndarray) -> np.ndarray:  # fmt: skip
    """filter3 at every (rows, cols) start: taps[t] pixels along y (vertical) or x, weighted by weights[t]."""
    acc = np.full((*rows.shape, 3), 1 << (PRECISION_BITS - 1), np.int64)
    for i in range(weights.shape[1]):
        used = i < taps
        y = np.where(used, rows + i if vertical else rows, 0)
        x = np.where(used, cols if vertical else cols + i, 0)
        acc += np.where(used[..., None], image[y, x].astype(np.int64) * weights[t, i][..., None], 0)
    return np.clip(acc >> PRECISION_BITS, 0, 255)


def _image(flat: np.ndarray, width: int) -> np.ndarray:
    rows = flat.size // (width * 3)
    return flat[: rows * width * 3].reshape(rows, width, 3)


def resample_first(frame, frame_w, vertical, off, bounds, weights, ksize, tmp, tw, th) -> None:
    """resample_first: frame -> scratch (tw x th RGB)."""
    b, k = bounds.reshape(-1, 2), weights[: bounds.size // 2 * ksize].reshape(-1, ksize)
    y, x = np.mgrid[0:th, 0:tw]
    t = y if vertical else x
    sx = off + x if vertical else b[t, 0]
    sy = b[t, 0] if vertical else off + y
    p = _filter3(_image(frame, frame_w), sy, sx, bool(vertical), b[t, 1], k, t)
    tmp[: th * tw * 3] = p.astype(np.uint8).ravel()


def resample_store(tmp, tw, vertical, bounds, weights, ksize, px, py, pw, ph, pad, bgr, lut, cs, ys, xs, out_w,
                   out_h, out) -> None:  # fmt: skip
    """resample_store: scratch -> tensor; float output (through ``lut``) when ``out`` is float32."""
    b, k = bounds.reshape(-1, 2), weights[: bounds.size // 2 * ksize].reshape(-1, ksize)
    y, x = np.mgrid[0:out_h, 0:out_w]
    u, v = x - px, y - py
    inside = (u >= 0) & (u < pw) & (v >= 0) & (v < ph)
    t = np.where(inside, v if vertical else u, 0)
    sx = np.where(inside, u, 0) if vertical else b[t, 0]
    sy = b[t, 0] if vertical else np.where(inside, v, 0)
    p = _filter3(_image(tmp, tw), sy, sx, bool(vertical), np.where(inside, b[t, 1], 0), k, t)
    p = np.where(inside[..., None], p, pad)
    if bgr:
        p = p[..., ::-1]
    for c in range(3):
        index = c * cs + y * ys + x * xs
        out[index] = lut.reshape(3, 256)[c, p[..., c]] if out.dtype == np.float32 else p[..., c].astype(np.uint8)


KERNELS = {"resample_first": resample_first, "resample_store": resample_store}
# Per kernel, the dtype each pointer argument is read as (by position), the rest being int32 scalars.
POINTERS = {
    "resample_first": {0: np.uint8, 4: np.int32, 5: np.int32, 7: np.uint8},
    "resample_store": {0: np.uint8, 3: np.int32, 4: np.int32, 12: np.float32, 18: None},  # None: the output dtype
}
