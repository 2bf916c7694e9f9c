"""Prepared execution of a graph on one OpenCL device.

At prepare time: plan every node (kernel or NumPy fallback) and rewrite the plans (edgeinfer.planning), build each
program once through the cache, allocate one arena for the memory plan (a sub-buffer per planned tensor) plus
buffers for graph inputs, outputs and uploaded constants, create every kernel object with its arguments set, and
turn the graph into a flat list of steps (enqueue a kernel, copy a tensor, run a node on the host). ``run`` only
walks the steps.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyopencl as cl

from edgeinfer.backends.base import Executable
from edgeinfer.backends.opencl import parallel_build, program_cache
from edgeinfer.backends.opencl.memory import GuardedAllocator, use_arena
from edgeinfer.backends.opencl.plans import device_graph, launch_program, plan_context
from edgeinfer.backends.opencl.runtime import OpenCLDevice, shared_queue
from edgeinfer.ir import Graph
from edgeinfer.planning import layout
from edgeinfer.planning.context import guard_bytes, local_size
from edgeinfer.planning.half_storage import (
    boundary_conversion,
    float_tensor_names,
    storage_graph,
    stored_constant,
    wants_half_storage,
)
from edgeinfer.planning.plan import BufferCopy, GuardedTensorArg, Launch, ScratchArg, TensorArg, scratch_floats
from edgeinfer.planning.registry import plan_graph
from edgeinfer.planning.report import READ_OUTPUTS, WRITE_INPUTS, explain_rows, profile_rows
from edgeinfer.planning.rewrites import device_tensors, rewrite_plans
from edgeinfer.planning.tensor import strided_copy

MF = cl.mem_flags

SPIN_ENV = "EDGEINFER_OPENCL_SPIN"  # "1": the host polls while the device works (see wait_for_device)


def spin_wanted() -> bool:
    value = os.environ.get(SPIN_ENV, "0").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{SPIN_ENV}={value!r}: expected 0 or 1")
    return value == "1"


# A step gets the run's host tensors and the queue; it returns the OpenCL event of a device command.
StepFn = Callable[[dict[str, np.ndarray], cl.CommandQueue], Any]


@dataclass
class Step:
    node_index: int  # -1 for the final output reads
    kind: str  # "kernel", "copy", "to_host", "to_device", "host"
    fn: StepFn
    label: str = ""


class OpenCLExecutable(Executable):
    def __init__(self, graph: Graph, device: OpenCLDevice, overrides: dict[str, dict[str, Any]] | None = None):
        self._closed = False
        self._filled_on_device: frozenset[str] = frozenset()  # graph inputs that run() must not upload
        # This run's non-blocking output reads. Held until wait_for_device: pyopencl's NannyEvent waits for its
        # read when it is freed, so dropping it at once would make every read blocking again (measured).
        self._pending_reads: list[cl.Event] = []
        self.spin = spin_wanted()
        self.device = device
        # CPUs run convolutions on channel-blocked tensors (layout.py); the pack's graph stays as it is.
        self.graph = graph = device_graph(graph, device)
        self.half_storage = wants_half_storage(graph, device.info.kind)  # fp16 packs on GPUs (half_storage.py)
        self.context = device.context
        self.queue = shared_queue(self.context)  # one per context (runtime.py says why)
        self._profiling_queue: cl.CommandQueue | None = None
        self.local_fits: list[tuple[str, tuple[int, ...], tuple[int, ...], int]] = []  # (kernel, wanted, used, limit)
        cl_device = device.device
        plan_ctx = plan_context(
            graph,
            device,
            overrides=overrides,
            work_group_limit=lambda launch: self._compile(launch).get_work_group_info(
                cl.kernel_work_group_info.WORK_GROUP_SIZE, cl_device
            ),
            half_storage=self.half_storage,
        )
        self.records = plan_graph(graph, plan_ctx)
        self.widened = float_tensor_names(graph) if self.half_storage else set()  # half on device, float32 on host
        if self.half_storage:  # from here on, the graph as memory holds it
            self.graph = graph = storage_graph(graph)
        align = max(cl_device.mem_base_addr_align // 8, 1)  # bits -> bytes
        rewritten = rewrite_plans(self.records, graph, align, guard_bytes(align))
        if program_cache.driver_keeps_builds(cl_device) and not overrides and not program_cache.only_cached():
            # PoCL compiles one program at a time per process: a cold load spreads its compiles over several
            launches = [launch for record in self.records for launch in (record.plan.launches if record.plan else [])]
            parallel_build.build_ahead([launch for launch in launches if isinstance(launch, Launch)], graph, device)
        self.redirected = rewritten.redirected  # record index -> the tensor its launch writes instead of its output
        self.own_buffers = rewritten.own_buffers  # planned tensors that get a buffer outside the arena nonetheless
        self.aliases = rewritten.aliases  # zero-copy Concat inputs -> (the Concat's output, byte offset)
        self.buffers: dict[str, cl.Buffer] = {}
        self.constant_buffers: list[cl.Buffer] = []
        self._allocate()
        self.steps = self._build_steps()
        self.warm_up_error: Exception | None = None
        if program_cache.PROGRESS.count and program_cache.driver_keeps_builds(cl_device):
            self._enqueue_every_kernel_once()
        program_cache.finish_progress()

    # ------------------------------------------------------------------ preparation

    def _allocate(self) -> None:
        """Every device tensor gets a guarded buffer (memory.py): a slice of the arena when the memory plan
        places it (on devices where an arena pays off: memory.use_arena), a slice of its Concat's output when
        zero-copy, else a buffer of its own. Tensors starting at the same place share one sub-buffer."""
        plan = self.graph.memory_plan
        memory = self.memory = GuardedAllocator(self.context, self.device.device)
        roots = {root for root, _ in self.aliases.values()}
        names = device_tensors(self.records) | roots | set(self.aliases)
        extents: dict[int, int] = {}  # planned offset -> largest arena tensor there (one sub-buffer each)
        for name in names - roots - set(self.aliases) - set(self.graph.constants) - self.own_buffers:
            offset = plan.offsets.get(name)
            if offset is not None:
                extents[offset] = max(extents.get(offset, 0), self.graph.tensors[name].nbytes)
        self.uses_arena = use_arena(self.device.device)
        arena = memory.arena(plan.arena_bytes, extents) if self.uses_arena else None
        for name in sorted(names, key=lambda n: (n in self.aliases, n)):  # roots before their slices
            if name in self.aliases:
                root, offset = self.aliases[name]
                self.buffers[name] = memory.slice_of(self.buffers[root], offset, self.graph.tensors[name].nbytes)
            elif name in self.graph.constants:
                self.buffers[name] = memory.constant_tensor(self.queue, self._stored_constant(name))
            else:
                nbytes = self.graph.tensors[name].nbytes
                offset = plan.offsets.get(name) if name not in roots and name not in self.own_buffers else None
                buffer = memory.in_arena(arena, offset, nbytes) if arena is not None and offset is not None else None
                self.buffers[name] = buffer if buffer is not None else memory.tensor(nbytes)
        scratch = scratch_floats([record.plan for record in self.records])  # plan.ScratchArg: one for all plans
        self.scratch = memory.tensor(4 * scratch) if scratch else None

    def _upload(self, array: np.ndarray) -> cl.Buffer:
        array = np.ascontiguousarray(array)
        if array.nbytes == 0:
            array = np.zeros(1, array.dtype)
        return cl.Buffer(self.context, MF.READ_ONLY | MF.COPY_HOST_PTR, hostbuf=array)

    def _compile(self, launch: Launch) -> cl.Kernel:
        """A new kernel object of ``launch`` (its program built once per process: program_cache)."""
        cl_device = self.device.device
        source, options = launch_program(launch, cl_device)
        program = program_cache.build_program(
            self.context, cl_device, self.device.info.device_key, source, options, launch.template
        )
        return cl.Kernel(program, launch.kernel)

    def _kernel(self, launch: Launch) -> cl.Kernel:
        cl_device = self.device.device
        kernel = self._compile(launch)
        # The largest work-group this compiled kernel can run with on this device (register use included):
        # a larger local size fails at enqueue (NVIDIA: CL_OUT_OF_RESOURCES). Shrink the group to fit.
        limit = kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, cl_device)
        if int(np.prod(launch.local)) > limit:
            fitted = local_size(launch.local, launch.local, limit)
            self.local_fits.append((launch.kernel, tuple(launch.local), fitted, int(limit)))
            launch.local = fitted
        args = []
        for arg in launch.args:
            if isinstance(arg, GuardedTensorArg):  # (sub-buffer from the guard before the tensor, offset)
                itemsize = np.dtype(self._dtype(arg.name)).itemsize
                args += [self.memory.with_front_guard(self.buffers[arg.name]), np.int32(self.memory.guard // itemsize)]
            elif isinstance(arg, TensorArg):
                args.append(self.buffers[arg.name])
            elif isinstance(arg, ScratchArg):
                args.append(self.scratch)
            elif isinstance(arg, np.ndarray):
                # Kernels do not retain their buffer arguments: the executable must keep them alive.
                self.constant_buffers.append(self._upload(arg))
                args.append(self.constant_buffers[-1])
            else:
                args.append(arg)
        kernel.set_args(*args)
        return kernel

    def _build_steps(self) -> list[Step]:
        self.host_read_inputs: set[str] = set()
        steps: list[Step] = []
        graph = self.graph
        on_host = set(graph.inputs) | set(graph.constants)
        on_device: set[str] = set(graph.constants)
        for index, record in enumerate(self.records):
            node = record.node
            inputs = [name for name in node.inputs if name]
            if record.plan is not None:  # a launch may read another tensor than the node's inputs (plan_slice)
                written = {*node.outputs, self.redirected.get(index, "")}
                inputs += sorted(record.plan.tensors() - set(inputs) - written)
            if record.plan is None:
                self.host_read_inputs.update(name for name in inputs if name in graph.inputs)
                for name in inputs:
                    if name not in on_host:
                        steps.append(self._to_host(index, name))
                        on_host.add(name)
                steps.append(Step(index, "host", lambda env, queue, node=node: layout.run_host(node, env), node.name))
                on_host.update(n for n in node.outputs if n)
                continue
            for name in inputs:
                if name not in on_device and name in self.buffers:  # a graph input's upload: a row of its own
                    steps.append(self._to_device(WRITE_INPUTS if name in graph.inputs else index, name))
                    on_device.add(name)
            for launch in record.plan.launches:
                steps.append(self._launch_step(index, launch))
            on_device.update(n for n in [*node.outputs, self.redirected.get(index, "")] if n)
        self.device_written_inputs = {name for name in graph.inputs if name in on_device}
        for name in graph.outputs:
            if name not in on_host:
                steps.append(self._to_host(READ_OUTPUTS, name))
        self.output_reads = [name for name in graph.outputs if name not in on_host]
        return steps

    def _dtype(self, name: str) -> str:
        """The dtype of ``name`` in device memory."""
        return (
            str(self._stored_constant(name).dtype) if name in self.graph.constants else self.graph.tensors[name].dtype
        )

    def _stored_constant(self, name: str) -> np.ndarray:
        array = self.graph.constants[name]
        return stored_constant(array) if self.half_storage else array

    def _launch_step(self, index: int, launch: Launch | BufferCopy) -> Step:
        if isinstance(launch, BufferCopy) and self.buffers.get(launch.src) is self.buffers.get(launch.dst):
            # A view (memory_plan.VIEW_OPS) placed on its input's bytes: nothing to copy.
            return Step(index, "copy", lambda env, queue: None, "view")
        if isinstance(launch, BufferCopy):
            # A copy kernel, not clEnqueueCopyBuffer: on NVIDIA (580.159, H100) copies between sub-buffers of
            # the arena corrupted other live tensors (UltraFace's Reshape outputs read by the boxes Concat were
            # overwritten later; with a kernel copy the model is exact). Whole 4-byte words where possible.
            nbytes = self.graph.tensors[launch.dst].nbytes
            if nbytes == 0:
                return Step(index, "copy", lambda env, queue: None, "empty copy")
            element, count = ("int", nbytes // 4) if nbytes % 4 == 0 else ("uchar", nbytes)
            copy = strided_copy(TensorArg(launch.src), launch.dst, element, [count], [1], [1])
            step = self._launch_step(index, copy)
            return Step(index, "copy", step.fn, "copy")
        if 0 in launch.work:  # an empty tensor: nothing to compute
            return Step(index, "kernel", lambda env, queue: None, "empty")
        kernel = self._kernel(launch)
        global_size, local = launch.global_size, launch.local
        return Step(
            index,
            "kernel",
            lambda env, queue: cl.enqueue_nd_range_kernel(queue, kernel, global_size, local),
            launch.kernel,
        )

    def _conversion(self, to_half: bool, name: str) -> tuple[cl.Buffer, Callable[[cl.CommandQueue], cl.Event]]:
        """A half tensor at the host boundary (half_storage.py): its float32 staging buffer and the enqueue of the
        conversion between the two (into the tensor after an upload, out of it before a download)."""
        count = int(np.prod(self.graph.tensors[name].shape, dtype=np.int64))
        staging, tensor = self.memory.tensor(4 * count), self.buffers[name]
        launch = boundary_conversion(to_half, count, staging if to_half else tensor, tensor if to_half else staging)
        kernel = self._kernel(launch)  # may fit the work-group to the kernel: sizes read after
        global_size, local = launch.global_size, launch.local
        return staging, lambda queue: cl.enqueue_nd_range_kernel(queue, kernel, global_size, local)

    def _to_host(self, index: int, name: str) -> Step:
        info = self.graph.tensors[name]
        buffer, convert = self.buffers[name], None
        if name in self.widened:  # a half tensor: read as float32 from its staging buffer
            buffer, convert = self._conversion(False, name)

        def read(env: dict[str, np.ndarray], queue: cl.CommandQueue):
            if convert is not None:
                convert(queue)
            host = np.empty(info.shape, np.float32 if convert else info.dtype)
            event = cl.enqueue_copy(queue, host, buffer, is_blocking=False)  # run() waits (wait_for_device)
            env[name] = host
            self._pending_reads.append(event)
            return event

        return Step(index, "to_host", read, f"read {name}")

    def _to_device(self, index: int, name: str) -> Step:
        buffer, convert = self.buffers[name], None
        info = self.graph.tensors.get(name)
        dtype = info.dtype if info else None
        if name in self.widened:  # a half tensor: written as float32 into its staging buffer
            (buffer, convert), dtype = self._conversion(True, name), np.float32

        def write(env: dict[str, np.ndarray], queue: cl.CommandQueue):
            if name in self._filled_on_device:
                return None
            host = np.ascontiguousarray(env[name], dtype=dtype)
            env[name] = host  # keeps the array alive until the queue has read it
            event = cl.enqueue_copy(queue, buffer, host, is_blocking=False)
            return convert(queue) if convert is not None else event

        return Step(index, "to_device", write, f"write {name}")

    def _enqueue_every_kernel_once(self) -> None:
        """Run the graph once on zeros, under the status line. PoCL compiles each kernel for its work-group size at
        the kernel's first enqueue, so after a load that built programs the user's first run would spend most of a
        cold start compiling with nothing on the screen (SqueezeNet on the 2-core VM: a 5 s load, then a silent
        18 s first run). Zeros are an input like any other; should this run fail, the user's runs report their own
        errors, so its failure is kept (``warm_up_error``) and the load goes on."""
        env: dict[str, np.ndarray] = dict(self.graph.constants)
        for name in self.graph.inputs:
            env[name] = np.zeros(self.graph.tensors[name].shape, self.graph.tensors[name].dtype)
        kernels = sum(step.kind == "kernel" for step in self.steps)
        done = 0
        try:
            for step in self.steps:
                if step.kind == "host":
                    self.wait_for_device(self.queue)
                step.fn(env, self.queue)
                if step.kind == "kernel":
                    done += 1
                    self.queue.finish()  # the compile happens on the way: one status update per kernel
                    program_cache.PROGRESS.first_enqueue(done, kernels)
            self.wait_for_device(self.queue)
        except Exception as e:  # noqa: BLE001 - a warm-up only: the runs that matter raise their own errors
            self.warm_up_error = e
            self.queue.finish()
        finally:
            self._pending_reads.clear()

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Free the device objects now, in an order every driver accepts: wait for the queues, drop the steps
        (the kernel objects, which reference the buffers without retaining them, and the copy closures), then
        release the sub-buffers newest first and only then the parent buffers (memory.py: NVIDIA's driver
        segfaults on other orders, e.g. the one Python's deallocation of this object's attributes produced).
        Called by ``__del__``; the executable cannot run afterwards."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for queue in (getattr(self, "queue", None), getattr(self, "_profiling_queue", None)):
            if queue is not None:
                try:
                    queue.finish()
                except cl.Error:
                    pass
        self.steps = []
        self.buffers = {}
        self.constant_buffers = []
        memory = getattr(self, "memory", None)
        if memory is not None:
            memory.release()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser (e.g. at interpreter shutdown)
            pass

    # ------------------------------------------------------------------ running

    def device_input(self, name: str) -> cl.Buffer | None:
        """The device buffer of graph input ``name`` when only device kernels read it, else None.

        Work queued on ``self.queue`` may fill it (device pre-processing); ``run(..., filled_on_device={name})``
        then skips the upload, so the frame never makes a host round trip.
        """
        if name not in self.graph.inputs or name in self.host_read_inputs:
            return None
        return self.buffers.get(name)

    def device_preprocessor(self, pipeline: dict[str, Any]) -> Any:
        """Resize + colour + normalise + layout as device kernels on this queue (bit-equal to the host path)."""
        from edgeinfer.backends.opencl.preprocess import DevicePreprocessor

        return DevicePreprocessor.for_executable(self, pipeline)

    def run(
        self, feeds: dict[str, np.ndarray], filled_on_device: frozenset[str] = frozenset()
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError("this OpenCL executable was closed")
        for name in filled_on_device:
            if self.device_input(name) is None:
                raise ValueError(f"input {name!r} cannot be filled on the device: it is read on the host or unknown")
        env: dict[str, np.ndarray] = dict(self.graph.constants)
        env.update(feeds)
        self._filled_on_device = filled_on_device
        queue = self.queue
        try:
            for step in self.steps:
                if step.kind == "host":
                    self.wait_for_device(queue)  # its inputs' reads
                step.fn(env, queue)
            self.wait_for_device(queue)
        finally:
            self._filled_on_device = frozenset()
            self._pending_reads.clear()
        return {name: env[name] for name in self.graph.outputs}

    def wait_for_device(self, queue: cl.CommandQueue) -> None:
        """Until every command enqueued on ``queue`` so far is done: sleeping in clFinish, or with ``spin``
        (EDGEINFER_OPENCL_SPIN=1) polling a marker with sched_yield, as onnxruntime's workers spin. Measured on
        PoCL (2-core VM): polling makes the runs right after idle fast (MobileNetV2 in blocks of 10 after 0.3 s
        idle: 3.92 -> 2.90 ms; SqueezeNet 3.42 -> 2.48) but, as a third busy thread on two cores, it takes CPU
        from PoCL's workers: in back-to-back runs it was erratic (MobileNetV2 2.68-4.78 ms against 2.49-2.61
        sleeping), and YOLOX-nano after idle did not gain. So it is off by default."""
        if self.spin:
            queue.flush()
            marker = cl.enqueue_marker(queue)
            while marker.command_execution_status > 0:  # QUEUED 3, SUBMITTED 2, RUNNING 1; COMPLETE 0; errors < 0
                os.sched_yield()
        queue.finish()  # after polling: raises what went wrong, if anything did, and returns at once otherwise
        self._pending_reads.clear()

    def explain(self) -> list[dict[str, Any]]:
        return explain_rows(self.records)

    def profile(self, feeds: dict[str, np.ndarray], repeat: int = 10) -> list[dict[str, Any]]:
        """Per node: median time over ``repeat`` runs (OpenCL profiling events; wall time for host nodes),
        achieved GFLOP/s and GB/s, and share of the total; slowest first."""
        if self._profiling_queue is None:
            self._profiling_queue = shared_queue(self.context, profiling=True)
            self.queue.finish()  # commands of the run queue (uploads) before those of the profiling queue
        queue = self._profiling_queue
        samples: dict[int, list[float]] = {i: [] for i in range(WRITE_INPUTS, len(self.records))}
        for _ in range(max(repeat, 1)):
            env: dict[str, np.ndarray] = dict(self.graph.constants)
            env.update(feeds)
            times = {i: 0.0 for i in samples}
            events = []
            for step in self.steps:
                if step.kind == "host":
                    queue.finish()
                    start = time.perf_counter()
                    step.fn(env, queue)
                    times[step.node_index] += (time.perf_counter() - start) * 1e3
                else:
                    events.append((step.node_index, step.fn(env, queue)))
            queue.finish()
            self._pending_reads.clear()
            for index, event in events:
                if event is not None:
                    times[index] += (event.profile.end - event.profile.start) * 1e-6
            for index, value in times.items():
                samples[index].append(value)
        median_ms = {i: statistics.median(v) for i, v in samples.items()}
        return profile_rows(self.records, self.graph, median_ms, self.output_reads, sorted(self.device_written_inputs))
