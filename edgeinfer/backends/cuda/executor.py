"""Prepared execution of a graph on one CUDA device, through CuPy.

At prepare time, as the OpenCL executor does (backends/opencl/executor.py): plan every node (kernel or NumPy
fallback) and rewrite the plans (edgeinfer.planning), compile each program once (program_cache), lay out one device
allocation (memory.py: the memory plan's arena and every other device tensor, with guard bands), upload constants
and launch arrays once, and turn the graph into steps: upload a tensor, run a segment, download a tensor, run a
node on the host. A segment is a run of kernel launches with no host step between them; each is captured once into
a CUDA graph on a non-blocking stream and replayed per run (``EDGEINFER_CUDA_GRAPHS=0``: launched kernel by kernel,
for debugging). The captured kernels read and write fixed addresses and inputs are copied into their fixed device
buffers before a replay, so one capture serves every run. Inputs and outputs go through pinned host buffers.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cupy
import cupyx
import numpy as np

from edgeinfer.backends.base import DeviceInfo, Executable
from edgeinfer.backends.cuda import program_cache
from edgeinfer.backends.cuda.memory import ALIGN, DeviceLayout, grid_of, grid_shortfall
from edgeinfer.backends.cuda.plans import device_graph, plan_context
from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS, program_source
from edgeinfer.errors import InputError
from edgeinfer.ir import Graph, Node
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

GRAPHS_ENV = "EDGEINFER_CUDA_GRAPHS"  # "0": plain launches instead of captured CUDA graphs
H2D, D2H = 1, 2  # cudaMemcpyKind: cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost (fixed by CUDA's ABI)


def graphs_wanted() -> bool:
    value = os.environ.get(GRAPHS_ENV, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{GRAPHS_ENV}={value!r}: expected 0 or 1")
    return value == "1"


@dataclass
class KernelCall:
    """One kernel launch with its arguments bound (device arrays stand for pointers, numpy scalars by value)."""

    node_index: int
    function: Any  # cupy.RawKernel
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple
    label: str

    def launch(self) -> None:
        self.function(self.grid, self.block, self.args)  # on CuPy's current stream (the executable's)


@dataclass
class Step:
    node_index: int  # READ_OUTPUTS / WRITE_INPUTS for the copies of graph outputs / inputs
    kind: str  # "segment", "to_device", "to_host", "host"
    name: str = ""  # the tensor of a copy
    node: Node | None = None  # of a host step
    calls: list[KernelCall] = field(default_factory=list)  # of a segment
    graph: Any = None  # a segment's captured cupy.cuda.graph.Graph


class CudaExecutable(Executable):
    def __init__(self, graph: Graph, device: DeviceInfo, overrides: dict[str, dict[str, Any]] | None = None):
        self.info = device
        self.device = cupy.cuda.Device(device.details["ordinal"])
        self.use_graphs = graphs_wanted()
        self.graph = graph = device_graph(graph)
        self.half_storage = wants_half_storage(graph, "gpu")  # fp16 packs (planning/half_storage.py)
        self.local_fits: list[tuple[str, tuple[int, ...], tuple[int, ...], int]] = []  # (kernel, wanted, used, limit)
        self._functions: dict[tuple[str, str, str], Any] = {}
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
            plan_ctx = plan_context(graph, device, overrides=overrides, work_group_limit=self._block_limit,
                                    half_storage=self.half_storage)  # fmt: skip
            self.records = plan_graph(graph, plan_ctx)
            self.widened = float_tensor_names(graph) if self.half_storage else set()  # half on device, float32 on host
            self.staging: dict[str, int] = {}  # half tensor -> offset of its float32 staging region
            if self.half_storage:  # from here on, the graph as memory holds it
                self.graph = graph = storage_graph(graph)
            # Every program the plans name, compiled in parallel before the steps load them one by one.
            sources = {program_source(launch.template, launch.defines) for record in self.records if record.plan
                       for launch in record.plan.launches if isinstance(launch, Launch)}  # fmt: skip
            program_cache.compile_ahead(sorted(sources), NVRTC_OPTIONS, self.info)
            self._decline_oversized_grids()
            self.guard = guard_bytes(ALIGN)
            rewritten = rewrite_plans(self.records, graph, ALIGN, self.guard)
            self.redirected = rewritten.redirected  # record index -> the tensor its launch writes instead
            self.own_buffers = rewritten.own_buffers
            self.aliases = rewritten.aliases  # zero-copy Concat inputs -> (the Concat's output, byte offset)
            self.layout = self._place_tensors()
            self._uploads: list[tuple[int, np.ndarray]] = []  # (offset, bytes) of constants and launch arrays
            self.steps = self._build_steps()
            self.memory = cupy.zeros(self.layout.size, dtype=cupy.uint8)  # the one allocation
            for offset, data in self._uploads:
                cupy.cuda.runtime.memcpy(self.memory.data.ptr + offset, data.ctypes.data, data.nbytes, H2D)
            self._uploads = []
            self._bind_pointers()
            self.pinned = {name: self._pinned(name) for name in self._copied}
            self.device.synchronize()
            if self.use_graphs:
                for step in self.steps:
                    if step.kind == "segment":
                        step.graph = self._capture(step.calls)

    # ------------------------------------------------------------------ preparation

    def _pinned(self, name: str) -> np.ndarray:
        info = self.graph.tensors[name]
        dtype = np.float32 if name in self.staging else info.dtype  # half tensors cross as float32 (staging)
        return cupyx.empty_pinned(info.shape, dtype) if info.nbytes else np.empty(info.shape, dtype)

    def _decline_oversized_grids(self) -> None:
        """A node with a launch CUDA cannot grid (more than 65535 blocks in y or z) runs on the host instead."""
        for record in self.records:
            for launch in record.plan.launches if record.plan else []:
                reason = grid_shortfall(launch.work, launch.local) if isinstance(launch, Launch) else None
                if reason:
                    record.plan, record.fallback_reason = None, f"{launch.kernel}: {reason}"
                    break

    def _place_tensors(self) -> DeviceLayout:
        """Every tensor a launch names gets an offset: planned intermediates in the arena region at the memory
        plan's offset, zero-copy Concat inputs inside their Concat's output, the rest regions of their own."""
        plan = self.graph.memory_plan
        placed = DeviceLayout(self.guard)
        arena = placed.region(plan.arena_bytes) if plan.arena_bytes else 0
        roots = {root for root, _ in self.aliases.values()}
        names = device_tensors(self.records) | roots | set(self.aliases)
        for name in sorted(names - set(self.aliases)):
            if name in self.graph.constants:
                placed.place(name, self._stored_constant(name).nbytes)
            elif name in plan.offsets and name not in roots and name not in self.own_buffers:
                placed.offsets[name] = arena + plan.offsets[name]
            else:
                placed.place(name, self.graph.tensors[name].nbytes)
        for name, (root, offset) in self.aliases.items():
            placed.offsets[name] = placed.offsets[root] + offset
        scratch = scratch_floats([record.plan for record in self.records])  # plan.ScratchArg: one for all plans
        self.scratch_offset = placed.region(4 * scratch) if scratch else None
        return placed

    def _function(self, launch: Launch) -> Any:
        """The ``cupy.RawKernel`` of ``launch`` (its module built once per process: program_cache)."""
        key = (launch.template, repr(sorted(launch.defines.items())), launch.kernel)
        if key not in self._functions:
            source = program_source(launch.template, launch.defines)
            module = program_cache.load_module(source, NVRTC_OPTIONS, self.info)
            self._functions[key] = module.get_function(launch.kernel)
        return self._functions[key]

    def _block_limit(self, launch: Launch) -> int:
        """The largest block the compiled kernel of ``launch`` runs with (register use included)."""
        return int(self._function(launch).max_threads_per_block)

    def _call(self, index: int, launch: Launch) -> KernelCall:
        function = self._function(launch)
        # The largest block this compiled kernel runs with (register use included); a larger one fails at launch.
        limit = int(function.max_threads_per_block)  # also loads the module now, never during a capture
        if int(np.prod(launch.local)) > limit:
            fitted = local_size(launch.local, launch.local, limit)
            self.local_fits.append((launch.kernel, tuple(launch.local), fitted, limit))
            launch.local = fitted
        args: list[Any] = []
        for arg in launch.args:
            if isinstance(arg, GuardedTensorArg):  # (pointer to the guard before the tensor, offset in elements)
                itemsize = np.dtype(self._dtype(arg.name)).itemsize
                args += [("at", self.layout.offsets[arg.name] - self.guard), np.int32(self.guard // itemsize)]
            elif isinstance(arg, TensorArg):
                args.append(("at", self.layout.offsets[arg.name]))
            elif isinstance(arg, ScratchArg):
                args.append(("at", self.scratch_offset))
            elif isinstance(arg, np.ndarray):  # a launch array: uploaded once, with the tensors
                data = np.ascontiguousarray(arg).reshape(-1).view(np.uint8)
                offset = self.layout.region(data.nbytes)
                self._uploads.append((offset, data))
                args.append(("at", offset))
            elif isinstance(arg, (np.int32, np.uint32, np.float32)):
                args.append(arg)
            elif isinstance(arg, tuple) and arg[0] == "at":  # a region placed by the executor (a staging buffer)
                args.append(arg)
            else:  # CuPy would pass a Python int as 64 bits, a float as a double
                raise TypeError(f"{launch.kernel}: scalar argument {arg!r} must be a 32-bit numpy scalar")
        grid, block = grid_of(launch.work, launch.local)
        return KernelCall(index, function, grid, block, tuple(args), launch.kernel)

    def _bind_pointers(self) -> None:
        """Replace the ("at", offset) placeholders by views of the allocation (CuPy passes their pointers)."""
        for step in self.steps:
            for call in step.calls:
                call.args = tuple(self.memory[a[1] :] if isinstance(a, tuple) else a for a in call.args)

    def _device_calls(self, index: int, launch: Launch | BufferCopy) -> list[KernelCall]:
        if isinstance(launch, BufferCopy):
            if self.layout.offsets[launch.src] == self.layout.offsets[launch.dst]:
                return []  # a view (memory_plan.VIEW_OPS) placed on its input's bytes: nothing to copy
            nbytes = self.graph.tensors[launch.dst].nbytes
            if nbytes == 0:
                return []
            element, count = ("int", nbytes // 4) if nbytes % 4 == 0 else ("uchar", nbytes)
            launch = strided_copy(TensorArg(launch.src), launch.dst, element, [count], [1], [1])  # as OpenCL does
        if 0 in launch.work:  # an empty tensor: nothing to compute
            return []
        return [self._call(index, launch)]

    def _build_steps(self) -> list[Step]:
        """The steps of a run, as the OpenCL executor orders them; graph inputs are uploaded first and host results
        right after their node, so that the kernels between two host nodes form one segment."""
        graph = self.graph
        on_host = set(graph.inputs) | set(graph.constants)
        on_device = set(graph.constants)
        placed = self.layout.offsets
        for name in graph.constants:
            if name in placed:
                data = np.ascontiguousarray(self._stored_constant(name)).reshape(-1).view(np.uint8)
                self._uploads.append((placed[name], data))
        items: list[Step | KernelCall] = []
        for name in graph.inputs:
            if name in placed:
                items.append(Step(WRITE_INPUTS, "to_device", name))
                on_device.add(name)
        for index, record in enumerate(self.records):
            node = record.node
            if record.plan is None:
                for name in (n for n in node.inputs if n and n not in on_host):
                    items.append(Step(index, "to_host", name))
                    on_host.add(name)
                items.append(Step(index, "host", node.name, node))
                for name in (n for n in node.outputs if n):
                    on_host.add(name)
                    if name in placed and name not in on_device:
                        items.append(Step(index, "to_device", name))
                        on_device.add(name)
                continue
            for launch in record.plan.launches:
                items += self._device_calls(index, launch)
            on_device.update(n for n in [*node.outputs, self.redirected.get(index, "")] if n)
        self.output_reads = [name for name in graph.outputs if name not in on_host]
        items += [Step(READ_OUTPUTS, "to_host", name) for name in self.output_reads]
        self.written_inputs = [s.name for s in items if isinstance(s, Step) and s.node_index == WRITE_INPUTS]
        self._copied = [s.name for s in items if isinstance(s, Step) and s.kind in ("to_host", "to_device")]
        for item in items:  # half tensors cross the host boundary as float32, converted on the device
            if isinstance(item, Step) and item.kind in ("to_host", "to_device") and item.name in self.widened:
                item.calls = [self._conversion(item.node_index, item.kind == "to_device", item.name)]
        steps: list[Step] = []
        for item in items:
            if isinstance(item, Step):
                steps.append(item)
            elif steps and steps[-1].kind == "segment":
                steps[-1].calls.append(item)
            else:
                steps.append(Step(item.node_index, "segment", calls=[item]))
        return steps

    def _conversion(self, index: int, to_half: bool, name: str) -> KernelCall:
        """The conversion of half tensor ``name`` at the host boundary (half_storage.py) through its float32 staging
        region: into the tensor after an upload (``to_half``), out of it before a download."""
        count = int(np.prod(self.graph.tensors[name].shape, dtype=np.int64))
        if name not in self.staging:
            self.staging[name] = self.layout.region(4 * count)
        staging, tensor = ("at", self.staging[name]), TensorArg(name)
        return self._call(index, boundary_conversion(to_half, count, staging if to_half else tensor,
                                                     tensor if to_half else staging))  # fmt: skip

    def _dtype(self, name: str) -> str:
        """The dtype of ``name`` in device memory."""
        return (
            str(self._stored_constant(name).dtype) if name in self.graph.constants else self.graph.tensors[name].dtype
        )

    def _stored_constant(self, name: str) -> np.ndarray:
        array = self.graph.constants[name]
        return stored_constant(array) if self.half_storage else array

    def _capture(self, calls: list[KernelCall]) -> Any:
        """The CUDA graph of ``calls``, captured on the executable's non-blocking stream (nothing runs now)."""
        with self.stream:
            self.stream.begin_capture()
            try:
                for call in calls:
                    call.launch()
            except BaseException:
                try:
                    self.stream.end_capture()
                except Exception:  # noqa: BLE001 - the launch error is the one to report
                    pass
                raise
            return self.stream.end_capture()

    # ------------------------------------------------------------------ running

    def _copy(self, step: Step, env: dict[str, np.ndarray]) -> None:
        """Enqueue the copy of ``step`` on the stream through the tensor's pinned host buffer (a half tensor's through
        its float32 staging region, with the conversion on the device: step.calls)."""
        host = self.pinned[step.name]
        if host.nbytes == 0:
            return
        pointer = self.memory.data.ptr + self.staging.get(step.name, self.layout.offsets[step.name])
        stream = self.stream.ptr
        if step.kind == "to_device":
            np.copyto(host, np.asarray(env[step.name]).reshape(host.shape), casting="unsafe")
            cupy.cuda.runtime.memcpyAsync(pointer, host.ctypes.data, host.nbytes, H2D, stream)
            for call in step.calls:
                call.launch()
        else:
            for call in step.calls:
                call.launch()
            cupy.cuda.runtime.memcpyAsync(host.ctypes.data, pointer, host.nbytes, D2H, stream)

    def _collect(self, pending: list[str], env: dict[str, np.ndarray]) -> None:
        """After a synchronize: the downloaded tensors as arrays of their own (the pinned buffers serve every run)."""
        for name in pending:
            env[name] = self.pinned[name].copy()
        pending.clear()

    def run(
        self, feeds: dict[str, np.ndarray], filled_on_device: frozenset[str] = frozenset()
    ) -> dict[str, np.ndarray]:
        for name in filled_on_device:
            if self.device_input(name) is None:
                raise InputError(f"input {name!r} cannot be filled on the device: it is read on the host or unknown")
        env: dict[str, np.ndarray] = dict(self.graph.constants)
        env.update(feeds)
        pending: list[str] = []
        with self.device, self.stream:
            for step in self.steps:
                if step.kind == "segment":
                    if step.graph is not None:
                        step.graph.launch(stream=self.stream)
                    else:
                        for call in step.calls:
                            call.launch()
                elif step.kind == "host":
                    self.stream.synchronize()  # the downloads of its inputs
                    self._collect(pending, env)
                    layout.run_host(step.node, env)
                elif step.name not in filled_on_device:  # a device-filled input: written by work queued before
                    self._copy(step, env)
                    if step.kind == "to_host":
                        pending.append(step.name)
            self.stream.synchronize()
        self._collect(pending, env)
        return {name: env[name] for name in self.graph.outputs}

    def device_input(self, name: str) -> Any | None:
        """The device region of graph input ``name`` (a CuPy view of the allocation) when only kernels read it, else
        None. Work queued on ``self.stream`` may fill it (device pre-processing); ``run(..., filled_on_device={name})``
        then skips its upload, and the segments replayed after that work read it."""
        if name not in self.graph.inputs or name in self.graph.outputs or name in self._host_read_tensors:
            return None
        if name not in self.layout.offsets:  # no kernel reads it
            return None
        offset = self.layout.offsets[name]
        return self.memory[offset : offset + self.graph.tensors[name].nbytes]

    @cached_property
    def _host_read_tensors(self) -> frozenset[str]:
        return frozenset(name for record in self.records if record.plan is None for name in record.node.inputs)

    def device_preprocessor(self, pipeline: dict[str, Any]) -> Any:
        """Resize + colour + normalise + layout as CUDA kernels on this stream (bit-equal to the host path)."""
        from edgeinfer.backends.cuda.preprocess import CudaPreprocessor

        return CudaPreprocessor.for_executable(self, pipeline)

    def explain(self) -> list[dict[str, Any]]:
        return explain_rows(self.records)

    def segments(self) -> list[int]:
        """Kernel launches per segment (one CUDA graph each), in run order."""
        return [len(step.calls) for step in self.steps if step.kind == "segment"]

    def profile(self, feeds: dict[str, np.ndarray], repeat: int = 10) -> list[dict[str, Any]]:
        """Per node: median time over ``repeat`` runs, slowest first. Kernels and copies are timed with CUDA events
        around each launch (so launched one by one, not as graphs), host nodes by wall time."""
        samples: dict[int, list[float]] = {i: [] for i in range(WRITE_INPUTS, len(self.records))}
        with self.device, self.stream:
            for _ in range(max(repeat, 1)):
                env: dict[str, np.ndarray] = dict(self.graph.constants)
                env.update(feeds)
                times = {i: 0.0 for i in samples}
                events: list[tuple[int, Any, Any]] = []
                pending: list[str] = []

                for step in self.steps:
                    if step.kind == "segment":
                        for call in step.calls:
                            self._timed(events, call.node_index, call.launch)
                    elif step.kind == "host":
                        self.stream.synchronize()
                        self._collect(pending, env)
                        started = time.perf_counter()
                        layout.run_host(step.node, env)
                        times[step.node_index] += (time.perf_counter() - started) * 1e3
                    else:
                        self._timed(events, step.node_index, lambda step=step, env=env: self._copy(step, env))
                        if step.kind == "to_host":
                            pending.append(step.name)
                self.stream.synchronize()
                self._collect(pending, env)
                for index, start, end in events:
                    times[index] += cupy.cuda.get_elapsed_time(start, end)
                for index, value in times.items():
                    samples[index].append(value)
        median_ms = {i: statistics.median(v) for i, v in samples.items()}
        return profile_rows(self.records, self.graph, median_ms, self.output_reads, self.written_inputs)

    def _timed(self, events: list[tuple[int, Any, Any]], index: int, work: Callable[[], None]) -> None:
        """Run ``work`` (enqueues on the stream) between two recorded CUDA events, noted in ``events``."""
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(self.stream)
        work()
        end.record(self.stream)
        events.append((index, start, end))
