"""Image pre-processing on the CUDA device, equal to ``edgeinfer.pipelines.preprocess.prepare_input`` bit for bit.

The same two kernels as on OpenCL (``kernels/opencl/preprocess.cl``, compiled as CUDA through the compat header
like every template: sources.program_source) with the same weight tables, scratch geometry, LUT and argument lists
(``edgeinfer/pipelines/resample_plan.py``). Per frame: the uint8 HxWx3 frame is copied into a pinned host buffer and
from there to the device, ``resample_first`` filters it into a scratch image, ``resample_store`` writes the network
input, all on the executable's stream, so that the graph replay queued after them reads the tensor with no host
wait. A 640x480 frame crosses PCIe as 0.9 MB of uint8 instead of YOLOX-nano's 2.1 MB float tensor.

These launches stay out of the executable's captured CUDA graphs: their grids and tables depend on the frame size,
and two launches and a copy replayed from a per-size graph would save a few microseconds for a second capture
scheme (per size, redone when the table cache drops a size). Replay follows them in stream order.

Usage (what ``Session.run(image)`` does)::

    pre = executable.device_preprocessor(pipeline)                     # CudaPreprocessor.for_executable
    pre.run(frame, out=executable.device_input(name))                   # queued on the executable's stream
    outputs = executable.run({}, filled_on_device=frozenset({name}))
    tensor, context = pre.run(frame)                                   # or a NumPy tensor, as prepare_input
"""

from __future__ import annotations

from typing import Any

import cupy
import cupyx
import numpy as np

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.cuda import program_cache
from edgeinfer.backends.cuda.executor import D2H, H2D
from edgeinfer.backends.cuda.memory import grid_of, grid_shortfall
from edgeinfer.backends.cuda.runtime import select_device
from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS, program_source
from edgeinfer.pipelines.resample_plan import (
    LOCAL_HINT,
    DeviceFrameTables,
    FrameSizeCache,
    check_frame,
    lut_values,
    output_tensor,
    plan_frame,
)
from edgeinfer.planning.context import local_size
from edgeinfer.planning.half_storage import stored_dtype


class CudaPreprocessor:
    """``prepare_input`` for HxWx3 uint8 RGB frames on a CUDA device, queued on ``stream`` (the model's)."""

    def __init__(self, info: DeviceInfo, device: Any, stream: Any, pipeline: dict[str, Any], half: bool = False):
        self.tensor = output_tensor(pipeline)  # raises without a 'size'
        self.pipeline = pipeline
        self.info, self.device, self.stream = info, device, stream
        self.shape, self.dtype = self.tensor.shape, self.tensor.dtype
        # half: the tensor is written as half (an fp16 pack's executable stores float tensors so, half_storage.py)
        self.stored = stored_dtype(self.dtype, half)
        self.nbytes = int(np.prod(self.shape)) * self.stored.itemsize
        defines = {"OUT_FLOAT": int(self.dtype == np.float32)} | ({"DATA_HALF": 1} if self.stored == np.float16 else {})
        source = program_source("preprocess", defines)
        with self.device, self.stream:
            module = program_cache.load_module(source, NVRTC_OPTIONS, info)
            self._first = module.get_function("resample_first")
            self._store = module.get_function("resample_store")
            # Also loads the module now (CuPy loads lazily), never in the middle of a frame.
            self._max_threads = min(int(self._first.max_threads_per_block), int(self._store.max_threads_per_block))
            self._lut_host = lut_values(pipeline)  # kept: the copy reads it asynchronously
            self._lut = self._upload(self._lut_host)
            self._frame_uploaded = cupy.cuda.Event(disable_timing=True)  # the pinned frame buffer is free again
        # Dropping a size's tables frees device memory queued kernels may still read: wait for them first.
        self._tables: FrameSizeCache[DeviceFrameTables[Any]] = FrameSizeCache(
            self._build_tables, on_drop=lambda _: self.stream.synchronize()
        )
        self._frame_host: np.ndarray | None = None  # pinned
        self._frame: Any = None  # device copy of the frame (grown to the largest frame seen)
        self._out: Any = None  # device tensor and its pinned host copy, for run(frame) without ``out``
        self._out_host: np.ndarray | None = None

    @classmethod
    def for_executable(cls, executable: Any, pipeline: dict[str, Any]) -> CudaPreprocessor:
        """Share a ``CudaExecutable``'s device and stream."""
        return cls(executable.info, executable.device, executable.stream, pipeline, executable.half_storage)

    @classmethod
    def for_device(cls, spec: str | None, pipeline: dict[str, Any]) -> CudaPreprocessor:
        """A preprocessor with its own stream on ``spec`` ("cuda" or "cuda:N")."""
        info = select_device(spec)
        device = cupy.cuda.Device(info.details["ordinal"])
        with device:
            stream = cupy.cuda.Stream(non_blocking=True)
        return cls(info, device, stream, pipeline)

    def _upload(self, array: np.ndarray) -> Any:
        """A new device buffer holding ``array`` (copied in stream order; the caller keeps ``array`` alive)."""
        buffer = cupy.empty(max(array.nbytes, 1), dtype=cupy.uint8)
        cupy.cuda.runtime.memcpyAsync(buffer.data.ptr, array.ctypes.data, array.nbytes, H2D, self.stream.ptr)
        return buffer

    def _build_tables(self, w: int, h: int) -> DeviceFrameTables[Any]:
        scratch = lambda nbytes: cupy.empty(nbytes, dtype=cupy.uint8)  # noqa: E731
        return DeviceFrameTables.upload(plan_frame(w, h, self.pipeline), self._upload, scratch)

    def _stage(self, frame: np.ndarray) -> None:
        """Queue the copy of ``frame`` to the device through the pinned buffer."""
        nbytes = frame.nbytes
        self._frame_uploaded.synchronize()  # the previous frame's copy has read the pinned buffer
        if self._frame_host is None or self._frame_host.nbytes < nbytes:
            self.stream.synchronize()  # queued kernels may still read the device frame about to be freed
            self._frame_host = cupyx.empty_pinned((nbytes,), np.uint8)
            self._frame = cupy.empty(nbytes, dtype=cupy.uint8)
        np.copyto(self._frame_host[:nbytes].reshape(frame.shape), frame)  # also gathers a non-contiguous frame
        cupy.cuda.runtime.memcpyAsync(self._frame.data.ptr, self._frame_host.ctypes.data, nbytes, H2D,
                                      self.stream.ptr)  # fmt: skip
        self._frame_uploaded.record(self.stream)

    def _launch(self, function: Any, work: tuple[int, int], args: tuple) -> None:
        local = local_size(work, LOCAL_HINT, self._max_threads)
        reason = grid_shortfall(work, local)
        if reason:
            raise ValueError(f"the frame is too large for one CUDA grid: {reason}")
        grid, block = grid_of(work, local)
        function(grid, block, args)  # on the current stream: self.stream

    def enqueue(self, frame: np.ndarray, out: Any) -> dict[str, Any]:
        """Queue the frame's copy and both kernels writing the tensor into ``out``; return the context. No wait."""
        check_frame(frame)
        h, w = frame.shape[:2]
        with self.device, self.stream:
            tables = self._tables.get(w, h)  # a frame that resizes to nothing raises here, before anything is queued
            self._stage(frame)
            self._launch(self._first, tables.plan.first_work, tables.first_args(self._frame, w))
            store_args = tables.store_args(self.pipeline, self.tensor, self._lut, out)
            self._launch(self._store, tables.plan.store_work, store_args)
        return dict(tables.plan.geometry.context)

    def run(self, frame: np.ndarray, out: Any = None) -> tuple[Any, dict[str, Any]]:
        """``prepare_input(frame, pipeline)`` on the device.

        With ``out`` (a device array of at least ``self.nbytes``, e.g. the executable's ``device_input``): returns
        ``out`` once the work is queued on the stream; work queued after it on that stream sees the tensor. Without:
        returns the tensor as a NumPy array (waits for the stream).
        """
        if out is not None:
            if out.nbytes < self.nbytes:
                raise ValueError(f"output buffer holds {out.nbytes} bytes, the tensor needs {self.nbytes}")
            return out, self.enqueue(frame, out)
        with self.device, self.stream:
            if self._out is None:
                self._out = cupy.empty(self.nbytes, dtype=cupy.uint8)
                self._out_host = cupyx.empty_pinned(self.shape, self.stored)
            context = self.enqueue(frame, self._out)
            cupy.cuda.runtime.memcpyAsync(self._out_host.ctypes.data, self._out.data.ptr, self.nbytes, D2H,
                                          self.stream.ptr)  # fmt: skip
            self.stream.synchronize()
        return self._out_host.astype(self.dtype), context
