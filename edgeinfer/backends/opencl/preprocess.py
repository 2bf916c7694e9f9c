"""Image pre-processing on the OpenCL device, equal to ``edgeinfer.pipelines.preprocess.prepare_input``.

The uint8 frame is uploaded once; two kernels (``kernels/opencl/preprocess.cl``) then do PIL's bilinear
resize (antialiased when downscaling), crop or letterbox placement, padding, channel order, scale/mean/std,
layout and dtype, writing the network input straight into a device buffer. PIL resizes in two separable
fixed-point passes with a rounding to uint8 in between, so the weight tables here follow Pillow's
``src/libImaging/Resample.c`` (``precompute_coeffs`` + ``normalize_coeffs_8bpc``) exactly, the passes run in
the order the installed Pillow picks (``vertical_first``), and the device tensor equals the CPU path's bit for
bit (tests/test_device_preprocess.py).

Usage::

    pre = DevicePreprocessor.for_executable(executable, pipeline)    # share the model's queue
    tensor, context = pre.run(frame)                                # numpy tensor, as prepare_input
    buffer, context = pre.run(frame, out=executable.buffers[name])  # or write into a device buffer
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyopencl as cl

from edgeinfer.backends.opencl import program_cache
from edgeinfer.backends.opencl.runtime import device_key as make_device_key
from edgeinfer.backends.opencl.runtime import select_device
from edgeinfer.pipelines.preprocess import Geometry, geometry
from edgeinfer.planning.context import local_size
from edgeinfer.planning.templates import template_source

MF = cl.mem_flags
PRECISION_BITS = 22  # Resample.c: 32 - 8 bits of result - 2 bits of overflow
_TABLE_CACHE_SIZE = 8  # frame geometries whose device tables a preprocessor keeps


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


@dataclass
class _Pass:
    """One resampling pass on the device: its weight table and the axis it filters."""

    vertical: bool
    bounds: cl.Buffer
    weights: cl.Buffer
    ksize: int


@dataclass
class _Tables:
    """Device-side weight tables and scratch image for one frame size."""

    geometry: Geometry
    first: _Pass
    second: _Pass
    offset: int  # frame coordinate of scratch row/column 0 along the axis the first pass does not filter
    tmp_hw: tuple[int, int]  # scratch image rows, columns
    tmp: cl.Buffer


class DevicePreprocessor:
    """``prepare_input`` for HxWx3 uint8 RGB frames, run on an OpenCL device.

    ``queue`` should be the queue the model runs on (in-order), so that the tensor written into a device
    buffer needs no host synchronisation before inference.
    """

    def __init__(self, queue: cl.CommandQueue, pipeline: dict[str, Any], device_key: str = ""):
        if not pipeline.get("size"):
            raise ValueError("pipeline has no 'size'; bind it to the model first (config.bind_to_model)")
        self.queue = queue
        self.context = queue.context
        self.pipeline = pipeline
        device = queue.device
        out_h, out_w = pipeline["size"]
        self.float_out = pipeline["dtype"] == "float32"
        self.dtype = np.dtype(np.float32 if self.float_out else np.uint8)
        if pipeline["layout"] == "NCHW":
            self.shape = (1, 3, out_h, out_w)
            self.strides = (out_h * out_w, out_w, 1)  # channel, row, column, in elements
        else:
            self.shape = (1, out_h, out_w, 3)
            self.strides = (1, out_w * 3, 3)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        key = device_key or make_device_key(device.platform, device)
        program = program_cache.build_program(
            self.context,
            device,
            key,
            template_source("preprocess"),
            f"-DOUT_FLOAT={int(self.float_out)}",
            "image pre-processing",
        )
        program_cache.finish_progress()  # a load ends here when it built this program: end its status line
        self._first = cl.Kernel(program, "resample_first")
        self._store = cl.Kernel(program, "resample_store")
        self._lut = self._upload(self._lut_values(pipeline))
        self._max_wg = device.max_work_group_size
        self._tables: OrderedDict[tuple[int, int], _Tables] = OrderedDict()
        self._frame_buf: cl.Buffer | None = None
        self._upload_event: cl.Event | None = None  # the queued frame upload (holds the host frame)
        self._out_buf: cl.Buffer | None = None

    @classmethod
    def for_executable(cls, executable: Any, pipeline: dict[str, Any]) -> DevicePreprocessor:
        """Share an ``OpenCLExecutable``'s context and queue (and its device key for the program cache)."""
        return cls(executable.queue, pipeline, executable.device.info.device_key)

    @classmethod
    def for_device(cls, spec: str | None, pipeline: dict[str, Any]) -> DevicePreprocessor:
        """A preprocessor with its own queue on ``spec`` ("opencl" or "opencl:P:D")."""
        device = select_device(spec)
        return cls(cl.CommandQueue(device.context), pipeline, device.info.device_key)

    @staticmethod
    def _lut_values(pipeline: dict[str, Any]) -> np.ndarray:
        """(3, 256) float32: what ``to_tensor`` makes of each pixel value, per output channel."""
        if pipeline["dtype"] != "float32":
            return np.zeros((3, 256), np.float32)  # unused: uint8 output is the raw pixels
        x = np.arange(256, dtype=np.float32)[None, :]
        mean = np.asarray(pipeline["mean"], np.float32)[:, None]
        std = np.asarray(pipeline["std"], np.float32)[:, None]
        return np.ascontiguousarray((x * np.float32(pipeline["scale"]) - mean) / std, dtype=np.float32)

    def _upload(self, array: np.ndarray) -> cl.Buffer:
        array = np.ascontiguousarray(array)
        return cl.Buffer(self.context, MF.READ_ONLY | MF.COPY_HOST_PTR, hostbuf=array)

    def tables(self, w: int, h: int) -> _Tables:
        """Weight tables and scratch buffer for a ``w`` x ``h`` frame, built once per frame size."""
        key = (w, h)
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        g = geometry(w, h, self.pipeline)
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
        tables = _Tables(
            geometry=g,
            first=_Pass(vertical, self._upload(b1.astype(np.int32)), self._upload(k1), k1.shape[1]),
            second=_Pass(not vertical, self._upload(b2.astype(np.int32)), self._upload(k2), k2.shape[1]),
            offset=start,
            tmp_hw=tmp_hw,
            tmp=cl.Buffer(self.context, MF.READ_WRITE, max(tmp_hw[0] * tmp_hw[1] * 3, 1)),
        )
        self._tables[key] = tables
        if len(self._tables) > _TABLE_CACHE_SIZE:
            self._tables.popitem(last=False)
        return tables

    def _launch(self, kernel: cl.Kernel, work: tuple[int, int]) -> None:
        local = local_size(work, (16, 8), self._max_wg)
        global_size = tuple(-(-n // lo) * lo for n, lo in zip(work, local))
        cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local)

    def enqueue(self, frame: np.ndarray, out: cl.Buffer) -> dict[str, Any]:
        """Queue the upload and both kernels writing the tensor into ``out``; return the context. No wait."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be HxWx3 uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")
        h, w = frame.shape[:2]
        t = self.tables(w, h)
        frame = np.ascontiguousarray(frame)
        if self._upload_event is not None:  # the previous frame must be read before its host array may go
            self._upload_event.wait()
        if self._frame_buf is None or self._frame_buf.size < frame.nbytes:
            self._frame_buf = cl.Buffer(self.context, MF.READ_ONLY, frame.nbytes)
        self._upload_event = cl.enqueue_copy(self.queue, self._frame_buf, frame, is_blocking=False)

        g = t.geometry
        th, tw = t.tmp_hw
        i32 = np.int32
        first, second = t.first, t.second
        self._first.set_args(
            self._frame_buf, i32(w), i32(first.vertical), i32(t.offset), first.bounds, first.weights,
            i32(first.ksize), t.tmp, i32(tw), i32(th),
        )  # fmt: skip
        self._launch(self._first, (tw, th))
        px, py, pw, ph = g.place
        out_w, out_h = g.out
        cs, ys, xs = self.strides
        self._store.set_args(
            t.tmp, i32(tw), i32(second.vertical), second.bounds, second.weights, i32(second.ksize),
            i32(px), i32(py), i32(pw), i32(ph), i32(int(round(self.pipeline["pad_value"]))),
            i32(self.pipeline["channel_order"] == "BGR"), self._lut, i32(cs), i32(ys), i32(xs), i32(out_w),
            i32(out_h), out,
        )  # fmt: skip
        self._launch(self._store, (out_w, out_h))
        return dict(g.context)

    def run(self, frame: np.ndarray, out: cl.Buffer | None = None) -> tuple[np.ndarray | cl.Buffer, dict[str, Any]]:
        """``prepare_input(frame, pipeline)`` on the device.

        Without ``out``: returns the tensor as a NumPy array (waits). With ``out`` (a device buffer of at least
        ``self.nbytes``, e.g. the executable's input buffer): returns ``out`` once the work is queued on
        ``self.queue``; commands queued after it on the same in-order queue see the tensor.
        """
        if out is not None:
            if out.size < self.nbytes:
                raise ValueError(f"output buffer holds {out.size} bytes, the tensor needs {self.nbytes}")
            return out, self.enqueue(frame, out)
        if self._out_buf is None:
            self._out_buf = cl.Buffer(self.context, MF.READ_WRITE, self.nbytes)
        context = self.enqueue(frame, self._out_buf)
        host = np.empty(self.shape, self.dtype)
        cl.enqueue_copy(self.queue, host, self._out_buf, is_blocking=True)
        return host, context
