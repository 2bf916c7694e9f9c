"""A cold load on PoCL compiles in several processes at once (issue 17).

PoCL compiles one thing at a time per process, whatever the threads or contexts: measured on the 2-core VM (six
``conv_pw_blocked`` programs, each built and enqueued once), one thread 4.0 s, two threads on one context 3.9 s, two
threads with a context each 4.0 s. Its kernel cache on disk (``POCL_CACHE_DIR``) is shared between processes,
though, and a cold load's time is almost all compiling: a program build (about 0.15 s of it fixed cost), then, at the
kernel's first enqueue, its compile for the launch's work-group size (0.1-6 s by the size of the unrolled code;
SqueezeNet 4 s of builds and 10 s of such compiles).

So a load on PoCL that finds launches whose programs were not built before (no binary, no marker: program_cache)
spreads that work over helper processes before the executor builds anything: this process and up to
``processes() - 1`` helpers (``python -m edgeinfer.backends.opencl.parallel_build WORKFILE``) take the distinct
launches one at a time from one list (a claim file each, first come first served), build the launch's program and
enqueue its kernel once, with its real global and work-group sizes, on zero-filled buffers of its tensors' sizes
(constant tensors hold their values: gather indices stay in range). The executor then finds this process's
programs in memory and the helpers' in PoCL's cache, and its warm-up run finds every kernel compiled. A helper that
fails leaves its claimed launch to the executor, which builds whatever is missing as before.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyopencl as cl

from edgeinfer.backends.opencl import program_cache
from edgeinfer.backends.opencl.memory import GuardedAllocator
from edgeinfer.backends.opencl.plans import launch_program
from edgeinfer.backends.opencl.runtime import OpenCLDevice, select_device
from edgeinfer.ir import Graph
from edgeinfer.planning.plan import GuardedTensorArg, Launch, ScratchArg, TensorArg

PROCESSES_ENV = "EDGEINFER_BUILD_PROCESSES"  # processes that compile a cold load on PoCL, this one included
MAX_PROCESSES = 4  # each helper holds an LLVM (~0.3 GB): a board's cores outnumber its memory's room for them


def processes() -> int:
    """How many processes compile a cold load: ``EDGEINFER_BUILD_PROCESSES`` where set, else one per core this process
    may run on, at most MAX_PROCESSES."""
    value = os.environ.get(PROCESSES_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{PROCESSES_ENV}={value!r}: expected a whole number >= 1")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_PROCESSES))


@dataclass
class WarmItem:
    """One distinct launch to compile: its program, kernel, sizes and arguments as buffer sizes or values."""

    claim: str  # claim file name: the hash of (program cache key, kernel, work-group size)
    source: str
    options: str
    label: str  # the template, for the status line
    kernel: str
    global_size: tuple[int, ...]
    local: tuple[int, ...]
    # ("tensor", nbytes) | ("guarded", nbytes, itemsize) | ("constant", array) | ("upload", array)
    # | ("scratch", floats) | ("value", scalar)
    args: list[tuple[Any, ...]]


def uncached_items(launches: list[Launch], graph: Graph, device: OpenCLDevice) -> list[WarmItem]:
    """The distinct launches of ``launches`` (in order) whose program no cache holds and this process has not built."""
    items: dict[str, WarmItem] = {}
    cl_device = device.device
    for launch in launches:
        if 0 in launch.work:
            continue
        source, options = launch_program(launch, cl_device)
        key = program_cache.cache_key(source, options, cl_device, device.info.device_key)
        if program_cache.is_cached(key, cl_device) or program_cache.in_memory(device.context, key):
            continue
        claim = hashlib.sha256(f"{key}\0{launch.kernel}\0{launch.local}".encode()).hexdigest()[:32]
        if claim not in items:
            args = [_arg_spec(arg, graph) for arg in launch.args]
            items[claim] = WarmItem(claim, source, options, launch.template, launch.kernel, launch.global_size,
                                    tuple(launch.local), args)  # fmt: skip
    return list(items.values())


def _arg_spec(arg: Any, graph: Graph) -> tuple[Any, ...]:
    if isinstance(arg, (TensorArg, GuardedTensorArg)) and arg.name in graph.constants:
        array = np.ascontiguousarray(graph.constants[arg.name])
        return (
            ("guarded", array.nbytes, array.itemsize, array)
            if isinstance(arg, GuardedTensorArg)
            else ("constant", array)
        )
    if isinstance(arg, GuardedTensorArg):
        info = graph.tensors[arg.name]
        return ("guarded", info.nbytes, np.dtype(info.dtype).itemsize, None)
    if isinstance(arg, TensorArg):
        return ("tensor", graph.tensors[arg.name].nbytes)
    if isinstance(arg, ScratchArg):
        return ("scratch", arg.floats)
    if isinstance(arg, np.ndarray):
        return ("upload", np.ascontiguousarray(arg))
    return ("value", arg)


def build_ahead(launches: list[Launch], graph: Graph, device: OpenCLDevice) -> None:
    """Compile the uncached launches of ``launches`` in this process and helper processes (module docstring); does
    nothing where one process would do it all anyway (one core, ``EDGEINFER_BUILD_PROCESSES=1``, fewer than two
    launches to compile)."""
    items = uncached_items(launches, graph, device)
    helpers = min(processes(), len(items)) - 1
    if helpers < 1:
        return
    work = Path(tempfile.mkdtemp(prefix="edgeinfer-build-"))
    children: list[subprocess.Popen] = []
    try:
        (work / "claims").mkdir()
        workfile = work / "work.pickle"
        workfile.write_bytes(pickle.dumps({"device": device.info.spec, "items": items}))
        children = [_start_helper(workfile, work / f"helper-{i}.count") for i in range(helpers)]
        warm_items(items, device, work / "claims")
        for i, child in enumerate(children):
            child.wait()
            count = work / f"helper-{i}.count"
            program_cache.count_built_elsewhere(int(count.read_text()) if count.is_file() else 0)
    except BaseException:  # a build error (the executor would meet it too) or an interrupt: no helpers left behind
        for child in children:
            child.kill()
            child.wait()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _start_helper(workfile: Path, count_file: Path) -> subprocess.Popen:
    package_root = str(Path(__file__).resolve().parents[3])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "EDGEINFER_PROGRESS": "0"}
    argv = [sys.executable, "-m", "edgeinfer.backends.opencl.parallel_build", str(workfile), str(count_file)]
    # The helper's stderr would be the compiler's (builds capture it; kernel compiles at enqueue may talk too).
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)  # fmt: skip


def warm_items(items: list[WarmItem], device: OpenCLDevice, claims: Path) -> None:
    """Build and enqueue once each item that no other process has claimed in ``claims``."""
    queue = cl.CommandQueue(device.context)
    for item in items:
        try:
            os.close(os.open(claims / item.claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        program = program_cache.build_program(device.context, device.device, device.info.device_key, item.source,
                                              item.options, item.label)  # fmt: skip
        try:
            _enqueue_once(cl.Kernel(program, item.kernel), item, device, queue)
        except cl.Error:  # the kernel compiles at the executor's warm-up instead, which reports its own errors
            pass


def _enqueue_once(kernel: cl.Kernel, item: WarmItem, device: OpenCLDevice, queue: cl.CommandQueue) -> None:
    """PoCL compiles ``kernel`` for the item's work-group size at its first enqueue: enqueue it once on zeros."""
    memory = GuardedAllocator(device.context, device.device)
    uploads: list[cl.Buffer] = []
    try:
        args = []
        for spec in item.args:
            kind = spec[0]
            if kind in ("tensor", "scratch", "guarded"):
                nbytes = spec[1] if kind != "scratch" else 4 * spec[1]
                buffer = memory.tensor(nbytes)
                parent = memory.parents[-1]
                cl.enqueue_fill_buffer(queue, parent, np.uint8(0), 0, parent.size)
                if kind == "guarded":
                    if spec[3] is not None and spec[3].nbytes:
                        cl.enqueue_copy(queue, buffer, spec[3])
                    args += [memory.with_front_guard(buffer), np.int32(memory.guard // spec[2])]
                else:
                    args.append(buffer)
            elif kind == "constant":
                args.append(memory.constant_tensor(queue, spec[1]))
            elif kind == "upload":
                array = spec[1] if spec[1].nbytes else np.zeros(1, spec[1].dtype)
                uploads.append(cl.Buffer(device.context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                                         hostbuf=array))  # fmt: skip
                args.append(uploads[-1])
            else:
                args.append(spec[1])
        kernel.set_args(*args)
        cl.enqueue_nd_range_kernel(queue, kernel, item.global_size, item.local)
        queue.finish()
    finally:
        queue.finish()
        for buffer in uploads:
            buffer.release()
        memory.release()


def _helper_main(workfile: str, count_file: str) -> None:
    work = pickle.loads(Path(workfile).read_bytes())
    device = select_device(work["device"])
    warm_items(work["items"], device, Path(workfile).parent / "claims")
    Path(count_file).write_text(str(program_cache.STATS["compiled"]))  # programs: two items may share one


if __name__ == "__main__":
    _helper_main(sys.argv[1], sys.argv[2])
