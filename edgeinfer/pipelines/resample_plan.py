"""What a device needs to run ``prepare_input`` with the kernels of ``kernels/opencl/preprocess.cl``, for any API.

The OpenCL and the CUDA pre-processors (``backends/opencl/preprocess.py``, ``backends/cuda/preprocess.py``) run the
same two kernels; everything but their buffers and launches is here, driver-free (numpy and pillow only):

- PIL's 8-bit BILINEAR weight tables, computed as Pillow's ``src/libImaging/Resample.c`` does
  (``precompute_coeffs`` + ``normalize_coeffs_8bpc``), and the pass order the installed Pillow picks
  (``vertical_first``), so that the device tensor equals the PIL path's bit for bit;
- per frame size (:func:`plan_frame`): the tables of both passes cut to the window the output needs, in frame and
  scratch coordinates, and the scratch image between the passes;
- the output tensor's shape, strides and dtype, the float LUT of scale/mean/std (:func:`lut_values`);
- the kernels' argument lists (:class:`DeviceFrameTables`), in ``preprocess.cl``'s order, around device buffers of
  any kind, and a small cache of them per frame size (:class:`FrameSizeCache`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import numpy as np

from edgeinfer.pipelines.preprocess import Geometry, geometry

PRECISION_BITS = 22  # Resample.c: 32 - 8 bits of result - 2 bits of overflow
LOCAL_HINT = (16, 8)  # work-group / block shape of both kernels (columns, rows), shrunk to the device's limit
TABLE_CACHE_SIZE = 8  # frame sizes whose device tables a pre-processor keeps

Buffer = TypeVar("Buffer")  # a device buffer: cl.Buffer, a CuPy array


@lru_cache(maxsize=64)
def pil_bilinear_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's 8-bit BILINEAR weights for resizing ``in_size`` -> ``out_size`` pixels along one axis.

    Returns ``bounds`` (out_size, 2) int32 = (first source pixel, tap count) and ``weights`` (out_size, ksize)
    int32 in 1.22 fixed point. Same double-precision operations, in the same order, as ``precompute_coeffs``
    (the sum is sequential, not NumPy's pairwise one), so every weight matches Pillow's.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # downscaling widens the triangle: antialiasing
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)  # C (int) casts truncate
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    k = np.zeros((out_size, ksize), np.float64)
    total = np.zeros(out_size, np.float64)
    for x in range(ksize):
        t = np.abs(((x + xmin).astype(np.float64) - center + 0.5) * ss)
        w = np.where((x < xmax) & (t < 1.0), 1.0 - t, 0.0)
        k[:, x] = w
        total += w
    k = np.divide(k, total[:, None], out=k, where=total[:, None] != 0.0)
    fixed = np.trunc(k * (1 << PRECISION_BITS) + np.where(k < 0, -0.5, 0.5)).astype(np.int32)
    bounds = np.stack([xmin, xmax], axis=1).astype(np.int32)
    bounds.flags.writeable = fixed.flags.writeable = False  # shared through the cache
    return bounds, fixed


@lru_cache(maxsize=1)
def pil_may_go_vertical_first() -> bool:
    """Whether the installed Pillow runs the vertical pass first when the height shrinks much more than the width.

    Pillow's pull request 9549 ("If height is scaled down significantly more than width, resize vertically
    first") changed the pass order, and with it the rounding between the passes. Older Pillows always go
    horizontal first. One small probe resize, on an image built so that the two orders differ, tells which.
    """
    from PIL import Image

    probe = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    image = Image.fromarray(probe, "RGB")
    both = np.asarray(image.resize((30, 10), Image.BILINEAR))
    horizontal_first = np.asarray(image.resize((30, 40), Image.BILINEAR).resize((30, 10), Image.BILINEAR))
    return not np.array_equal(both, horizontal_first)


def vertical_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """The pass order PIL uses for ``in_w`` x ``in_h`` -> ``out_w`` x ``out_h`` (measured on Pillow 13: vertical
    first exactly when the height shrinks and loses more than twice as many pixels as the width)."""
    return pil_may_go_vertical_first() and out_h < in_h and in_h - out_h > 2 * (in_w - out_w)


def check_frame(frame: np.ndarray) -> None:
    """ValueError unless ``frame`` is an HxWx3 uint8 array (the kernels read packed RGB bytes)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")


@dataclass(frozen=True)
class OutputTensor:
    """The network input the store kernel writes: batch-1 ``shape``, element ``strides`` (channel, row, column)."""

    shape: tuple[int, int, int, int]
    strides: tuple[int, int, int]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def output_tensor(pipeline: dict[str, Any]) -> OutputTensor:
    """Shape, strides and dtype of ``pipeline``'s tensor (``layout``, ``dtype``, ``size``)."""
    if not pipeline.get("size"):
        raise ValueError("pipeline has no 'size'; bind it to the model first (config.bind_to_model)")
    out_h, out_w = pipeline["size"]
    dtype = np.dtype(np.float32 if pipeline["dtype"] == "float32" else np.uint8)
    if pipeline["layout"] == "NCHW":
        return OutputTensor((1, 3, out_h, out_w), (out_h * out_w, out_w, 1), dtype)
    return OutputTensor((1, out_h, out_w, 3), (1, out_w * 3, 3), dtype)


def lut_values(pipeline: dict[str, Any]) -> np.ndarray:
    """(3, 256) float32: what ``to_tensor`` makes of each pixel value, per output channel (NumPy's float32
    arithmetic, so the device's float tensor equals the host's bit for bit)."""
    if pipeline["dtype"] != "float32":
        return np.zeros((3, 256), np.float32)  # unused: uint8 output is the raw pixels
    x = np.arange(256, dtype=np.float32)[None, :]
    mean = np.asarray(pipeline["mean"], np.float32)[:, None]
    std = np.asarray(pipeline["std"], np.float32)[:, None]
    return np.ascontiguousarray((x * np.float32(pipeline["scale"]) - mean) / std, dtype=np.float32)


@dataclass(frozen=True)
class ResamplePass:
    """One resampling pass: the axis it filters and its weight table, one row per output pixel along that axis:
    ``bounds`` (n, 2) int32 (first input pixel, tap count), ``weights`` (n, ksize) int32 in 1.22 fixed point."""

    vertical: bool
    bounds: np.ndarray
    weights: np.ndarray

    @property
    def ksize(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True)
class FramePlan:
    """How one frame size is pre-processed: ``first`` filters frame -> scratch (``tmp_hw`` rows, columns of RGB),
    ``second`` scratch -> the placed window of the output. ``first``'s bounds are frame coordinates; ``offset`` is
    the frame coordinate of scratch row/column 0 along the axis ``first`` does not filter; ``second``'s bounds are
    scratch coordinates."""

    geometry: Geometry
    first: ResamplePass
    second: ResamplePass
    offset: int
    tmp_hw: tuple[int, int]

    @property
    def tmp_nbytes(self) -> int:
        return max(self.tmp_hw[0] * self.tmp_hw[1] * 3, 1)

    @property
    def first_work(self) -> tuple[int, int]:
        """resample_first's work: (scratch columns, scratch rows)."""
        return self.tmp_hw[1], self.tmp_hw[0]

    @property
    def store_work(self) -> tuple[int, int]:
        """resample_store's work: (output columns, output rows)."""
        return self.geometry.out


def plan_frame(w: int, h: int, pipeline: dict[str, Any]) -> FramePlan:
    """The weight tables and scratch geometry of a ``w`` x ``h`` frame (``geometry`` says what is resized where)."""
    g = geometry(w, h, pipeline)
    sx0, sy0, sw, sh = g.src
    (rw, rh), (wx, wy), (_, _, pw, ph) = g.resized, g.window, g.place
    # Only the window's columns and rows are computed; source indices become frame coordinates.
    xb, xk = pil_bilinear_coeffs(sw, rw)
    xb, xk = xb[wx : wx + pw] + [sx0, 0], xk[wx : wx + pw]
    yb, yk = pil_bilinear_coeffs(sh, rh)
    yb, yk = yb[wy : wy + ph] + [sy0, 0], yk[wy : wy + ph]
    vertical = vertical_first(sw, sh, rw, rh)
    (b1, k1), (b2, k2) = ((yb, yk), (xb, xk)) if vertical else ((xb, xk), (yb, yk))
    # The first pass only covers the span of frame pixels the second pass reads.
    start, stop = int(b2[:, 0].min()), int((b2[:, 0] + b2[:, 1]).max())
    b2 = b2 - [start, 0]
    tmp_hw = (ph, stop - start) if vertical else (stop - start, pw)
    first = ResamplePass(vertical, np.ascontiguousarray(b1, np.int32), np.ascontiguousarray(k1, np.int32))
    second = ResamplePass(not vertical, np.ascontiguousarray(b2, np.int32), np.ascontiguousarray(k2, np.int32))
    return FramePlan(g, first, second, start, tmp_hw)


@dataclass
class DeviceFrameTables(Generic[Buffer]):
    """A :class:`FramePlan`'s tables and scratch image on a device, and the kernels' arguments around them."""

    plan: FramePlan
    first: tuple[Buffer, Buffer]  # bounds, weights
    second: tuple[Buffer, Buffer]
    tmp: Buffer

    @classmethod
    def upload(
        cls, plan: FramePlan, upload: Callable[[np.ndarray], Buffer], scratch: Callable[[int], Buffer]
    ) -> DeviceFrameTables[Buffer]:
        """``upload(array)`` copies a host array to a new device buffer, ``scratch(nbytes)`` allocates one."""
        passes = [(upload(p.bounds), upload(p.weights)) for p in (plan.first, plan.second)]
        return cls(plan, passes[0], passes[1], scratch(plan.tmp_nbytes))

    def first_args(self, frame: Buffer, frame_w: int) -> tuple:
        """resample_first's arguments, reading the packed RGB ``frame`` (``frame_w`` pixels a row)."""
        p, i32 = self.plan, np.int32
        (bounds, weights), (th, tw) = self.first, p.tmp_hw
        return (frame, i32(frame_w), i32(p.first.vertical), i32(p.offset), bounds, weights, i32(p.first.ksize),
                self.tmp, i32(tw), i32(th))  # fmt: skip

    def store_args(self, pipeline: dict[str, Any], tensor: OutputTensor, lut: Buffer, out: Buffer) -> tuple:
        """resample_store's arguments, writing ``tensor`` into ``out`` through the float ``lut``."""
        p, i32 = self.plan, np.int32
        (bounds, weights), (_, tw) = self.second, p.tmp_hw
        px, py, pw, ph = p.geometry.place
        out_w, out_h = p.geometry.out
        cs, ys, xs = tensor.strides
        return (self.tmp, i32(tw), i32(p.second.vertical), bounds, weights, i32(p.second.ksize), i32(px), i32(py),
                i32(pw), i32(ph), i32(int(round(pipeline["pad_value"]))), i32(pipeline["channel_order"] == "BGR"),
                lut, i32(cs), i32(ys), i32(xs), i32(out_w), i32(out_h), out)  # fmt: skip


T = TypeVar("T")


class FrameSizeCache(Generic[T]):
    """The last ``capacity`` frame sizes' ``build(w, h)`` results, least recently used dropped first (after
    ``on_drop(value)``, where a backend must wait for work that may still read the dropped buffers)."""

    def __init__(self, build: Callable[[int, int], T], on_drop: Callable[[T], None] | None = None,
                 capacity: int = TABLE_CACHE_SIZE):  # fmt: skip
        self._build, self._on_drop, self._capacity = build, on_drop, capacity
        self._entries: OrderedDict[tuple[int, int], T] = OrderedDict()

    def get(self, w: int, h: int) -> T:
        key = (w, h)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = self._entries[key] = self._build(w, h)
        if len(self._entries) > self._capacity:
            _, dropped = self._entries.popitem(last=False)
            if self._on_drop is not None:
                self._on_drop(dropped)
        return value

    def __len__(self) -> int:
        return len(self._entries)
