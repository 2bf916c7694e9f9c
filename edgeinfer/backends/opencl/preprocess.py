"""Image pre-processing on the OpenCL device, equal to ``edgeinfer.pipelines.preprocess.prepare_input``.

The uint8 frame is uploaded once; two kernels (``kernels/opencl/preprocess.cl``) then do PIL's bilinear
resize (antialiased when downscaling), crop or letterbox placement, padding, channel order, scale/mean/std,
layout and dtype, writing the network input straight into a device buffer. The weight tables, the scratch
geometry, the LUT and the kernels' argument lists are API-independent (``edgeinfer/pipelines/resample_plan.py``,
shared with the CUDA pre-processor); they follow Pillow's fixed-point resampling exactly, so the device tensor
equals the CPU path's bit for bit (tests/test_device_preprocess.py).

Usage::

    pre = DevicePreprocessor.for_executable(executable, pipeline)    # share the model's queue
    tensor, context = pre.run(frame)                                # numpy tensor, as prepare_input
    buffer, context = pre.run(frame, out=executable.buffers[name])  # or write into a device buffer
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl as cl

from edgeinfer.backends.opencl import program_cache
from edgeinfer.backends.opencl.runtime import device_key as make_device_key
from edgeinfer.backends.opencl.runtime import select_device
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
from edgeinfer.planning.templates import template_source

MF = cl.mem_flags


class DevicePreprocessor:
    """``prepare_input`` for HxWx3 uint8 RGB frames, run on an OpenCL device.

    ``queue`` should be the queue the model runs on (in-order), so that the tensor written into a device
    buffer needs no host synchronisation before inference.
    """

    def __init__(self, queue: cl.CommandQueue, pipeline: dict[str, Any], device_key: str = "", half: bool = False):
        self.tensor = output_tensor(pipeline)  # raises without a 'size'
        self.queue = queue
        self.context = queue.context
        self.pipeline = pipeline
        device = queue.device
        self.shape, self.dtype = self.tensor.shape, self.tensor.dtype
        # half: the tensor is written as half (an fp16 pack's executable stores float tensors so, half_storage.py)
        self.stored = stored_dtype(self.dtype, half)
        self.nbytes = int(np.prod(self.shape)) * self.stored.itemsize
        key = device_key or make_device_key(device.platform, device)
        program = program_cache.build_program(
            self.context,
            device,
            key,
            template_source("preprocess"),
            f"-DOUT_FLOAT={int(self.dtype == np.float32)}" + (" -DDATA_HALF=1" if self.stored == np.float16 else ""),
            "image pre-processing",
        )
        program_cache.finish_progress()  # a load ends here when it built this program: end its status line
        self._first = cl.Kernel(program, "resample_first")
        self._store = cl.Kernel(program, "resample_store")
        self._lut = self._upload(lut_values(pipeline))
        self._max_wg = device.max_work_group_size
        # Enqueued kernels retain their buffers, so tables dropped from the cache need no wait.
        self._tables: FrameSizeCache[DeviceFrameTables[cl.Buffer]] = FrameSizeCache(self._build_tables)
        self._frame_buf: cl.Buffer | None = None
        self._upload_event: cl.Event | None = None  # the queued frame upload (holds the host frame)
        self._out_buf: cl.Buffer | None = None

    @classmethod
    def for_executable(cls, executable: Any, pipeline: dict[str, Any]) -> DevicePreprocessor:
        """Share an ``OpenCLExecutable``'s context and queue (and its device key for the program cache)."""
        return cls(executable.queue, pipeline, executable.device.info.device_key, executable.half_storage)

    @classmethod
    def for_device(cls, spec: str | None, pipeline: dict[str, Any]) -> DevicePreprocessor:
        """A preprocessor with its own queue on ``spec`` ("opencl" or "opencl:P:D")."""
        device = select_device(spec)
        return cls(cl.CommandQueue(device.context), pipeline, device.info.device_key)

    def _upload(self, array: np.ndarray) -> cl.Buffer:
        array = np.ascontiguousarray(array)
        return cl.Buffer(self.context, MF.READ_ONLY | MF.COPY_HOST_PTR, hostbuf=array)

    def _build_tables(self, w: int, h: int) -> DeviceFrameTables[cl.Buffer]:
        scratch = lambda nbytes: cl.Buffer(self.context, MF.READ_WRITE, nbytes)  # noqa: E731
        return DeviceFrameTables.upload(plan_frame(w, h, self.pipeline), self._upload, scratch)

    def tables(self, w: int, h: int) -> DeviceFrameTables[cl.Buffer]:
        """Weight tables and scratch buffer for a ``w`` x ``h`` frame, built once per frame size."""
        return self._tables.get(w, h)

    def _launch(self, kernel: cl.Kernel, work: tuple[int, int]) -> None:
        local = local_size(work, LOCAL_HINT, self._max_wg)
        global_size = tuple(-(-n // lo) * lo for n, lo in zip(work, local))
        cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local)

    def enqueue(self, frame: np.ndarray, out: cl.Buffer) -> dict[str, Any]:
        """Queue the upload and both kernels writing the tensor into ``out``; return the context. No wait."""
        check_frame(frame)
        h, w = frame.shape[:2]
        t = self.tables(w, h)
        frame = np.ascontiguousarray(frame)
        if self._upload_event is not None:  # the previous frame must be read before its host array may go
            self._upload_event.wait()
        if self._frame_buf is None or self._frame_buf.size < frame.nbytes:
            self._frame_buf = cl.Buffer(self.context, MF.READ_ONLY, frame.nbytes)
        self._upload_event = cl.enqueue_copy(self.queue, self._frame_buf, frame, is_blocking=False)
        self._first.set_args(*t.first_args(self._frame_buf, w))
        self._launch(self._first, t.plan.first_work)
        self._store.set_args(*t.store_args(self.pipeline, self.tensor, self._lut, out))
        self._launch(self._store, t.plan.store_work)
        return dict(t.plan.geometry.context)

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
        host = np.empty(self.shape, self.stored)
        cl.enqueue_copy(self.queue, host, self._out_buf, is_blocking=True)
        return host.astype(self.dtype, copy=False), context
