"""Per-launch host cost of the OpenCL device: a trivial kernel enqueued N times, pipelined and one at a time,
and the whole-run time split of a pack (Python enqueue loop vs waiting for the device).

    python benchmarks/launch_overhead.py [PACK ...] [--device opencl]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import pyopencl as cl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeinfer.backends.opencl.runtime import select_device  # noqa: E402


def trivial_launches(spec: str, count: int = 500) -> None:
    device = select_device(spec)
    context = cl.Context([device.device])
    queue = cl.CommandQueue(context)
    source = "__kernel void k(__global float *a) { a[get_global_id(0)] = 1.0f; }"
    kernel = cl.Kernel(cl.Program(context, source).build(), "k")
    buf = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4096 * 4)
    kernel.set_args(buf)
    for size in (64, 4096):
        for _ in range(50):
            cl.enqueue_nd_range_kernel(queue, kernel, (size,), None)
        queue.finish()
        start = time.perf_counter()
        for _ in range(count):
            cl.enqueue_nd_range_kernel(queue, kernel, (size,), None)
        enqueued = time.perf_counter()
        queue.finish()
        done = time.perf_counter()
        single = []
        for _ in range(100):
            t0 = time.perf_counter()
            cl.enqueue_nd_range_kernel(queue, kernel, (size,), None)
            queue.finish()
            single.append(time.perf_counter() - t0)
        print(
            f"{device.info.name}: {size} work-items: enqueue {1e6 * (enqueued - start) / count:.1f} us/launch, "
            f"pipelined {1e6 * (done - start) / count:.1f} us/launch, one at a time {1e6 * np.median(single):.1f} us"
        )


def argument_kinds(spec: str, kernels: int = 50, count: int = 500) -> None:
    """Enqueue cost by the kind of buffer arguments: plain buffers vs sub-buffers of one arena, one kernel
    object vs many (as the executor has)."""
    device = select_device(spec)
    context = cl.Context([device.device])
    queue = cl.CommandQueue(context)
    source = (
        "__kernel void k(__global const float *a, __global const float *b, __global float *c) "
        "{ size_t i = get_global_id(0); c[i] = a[i] + b[i]; }"
    )
    program = cl.Program(context, source).build()
    align = max(device.device.mem_base_addr_align // 8, 256)
    arena = cl.Buffer(context, cl.mem_flags.READ_WRITE, 3 * kernels * align * 16)
    variants = {}
    for name, sub in (("plain buffers", 0), ("sub-buffers", 1), ("overlapping sub-buffers", 2)):
        objects = []
        for i in range(kernels):
            kernel = cl.Kernel(program, "k")
            if sub == 1:
                args = [arena.get_sub_region((3 * i + j) * align * 16, 4096) for j in range(3)]
            elif sub == 2:  # as a liveness-planned arena: views of other kernels overlap these
                args = [arena.get_sub_region(j * align * 16 + (i % 4) * align, 4096 + align) for j in range(3)]
            else:
                args = [cl.Buffer(context, cl.mem_flags.READ_WRITE, 4096) for _ in range(3)]
            kernel.set_args(*args)
            objects.append((kernel, args))
        variants[name] = objects
    for name, objects in variants.items():
        for label, chosen in (("1 kernel", objects[:1]), (f"{kernels} kernels", objects)):
            for _ in range(2):
                start = time.perf_counter()
                for i in range(count):
                    cl.enqueue_nd_range_kernel(queue, chosen[i % len(chosen)][0], (1024,), None)
                enqueued = time.perf_counter()
                queue.finish()
            print(
                f"{device.info.name}: {name}, {label}: enqueue {1e6 * (enqueued - start) / count:.1f} us/launch, "
                f"all done {1e6 * (time.perf_counter() - start) / count:.1f} us/launch"
            )


def pack_split(pack: str, spec: str, runs: int = 50) -> None:
    from edgeinfer.session import Session

    sess = Session(pack, device=spec)
    feeds = {s.name: np.random.default_rng(0).standard_normal(s.shape).astype(s.dtype) for s in sess.inputs}
    for _ in range(10):
        sess.run(feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(feeds)
        times.append(time.perf_counter() - t0)
    print(f"{Path(pack).name}: run() median {1e3 * np.median(times):.2f} ms")
    executable = sess._executable
    per_step = [[] for _ in executable.steps]
    for _ in range(20):
        env = {**executable.graph.constants, **feeds}
        for i, step in enumerate(executable.steps):
            t0 = time.perf_counter()
            step.fn(env, executable.queue)
            per_step[i].append(time.perf_counter() - t0)
        executable.queue.finish()
    host_us = [1e6 * float(np.median(t)) for t in per_step]
    order = np.argsort(host_us)[::-1]
    print(f"host time of the {len(host_us)} steps: sum {sum(host_us) / 1e3:.2f} ms, median {np.median(host_us):.1f} us")
    for i in order[:8]:
        step = executable.steps[i]
        print(f"  {host_us[i]:8.1f} us  {step.kind:8s} {step.label}")
    kernels = [i for i in order if executable.steps[i].kind == "kernel"][:3]
    for i in kernels:  # the same launch repeated: is the cost in the launch or in what ran before it?
        step, env = executable.steps[i], {**executable.graph.constants, **feeds}
        executable.queue.finish()
        t0 = time.perf_counter()
        for _ in range(100):
            step.fn(env, executable.queue)
        repeated = (time.perf_counter() - t0) * 1e4
        executable.queue.finish()
        print(f"  {step.label} repeated alone: {repeated:.1f} us per enqueue (in the run: {host_us[i]:.1f} us)")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        sess.run(feeds)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packs", nargs="*")
    parser.add_argument("--device", default="opencl")
    args = parser.parse_args()
    trivial_launches(args.device)
    argument_kinds(args.device)
    for pack in args.packs:
        pack_split(pack, args.device)


if __name__ == "__main__":
    main()
