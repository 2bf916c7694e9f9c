"""Debug whole-model OpenCL runs that crash: variants of the executor, each in its own subprocess.

    python benchmarks/opencl_debug.py [--models squeezenet1.1.onnx ...] [--variants base,noarena,...]

A variant monkeypatches the backend (no arena sub-buffers, no zero-copy Concat, plain buffers, a larger
guard, a finish after every step...) and runs each model once, step by step, printing the step before and
after it so that a crash names the last step reached. The parent prints each child's exit code and tail.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("EDGEINFER_SHARED", REPO.parent / "shared"))

VARIANTS = {
    "steps": "as shipped, finish + print after every step",
    "base": "as shipped, run() as is",
    "noarena": "no arena sub-buffers (every tensor its own guarded buffer)",
    "nozc": "no zero-copy Concat",
    "plain": "no sub-buffers at all: plain buffers (guard only after), no arena, no zero-copy",
    "bigguard": "guard of 64 KiB",
    "manyexe": "prepare 80 executables of one node and run each (tuner pattern)",
    "tune": "opencl_tune.py on mobilenet_v2 (rounds 1, repeat 1), with the fix",
    "tune_nofix": "opencl_tune.py on mobilenet_v2 (rounds 1, repeat 1), close() a no-op",
    "nofix": "as shipped before the fix: no ordered release (close() a no-op)",
    "m_subs_first": "raw: 3 live sub-buffers of one parent, released before the parent",
    "m_parent_first": "raw: 3 live sub-buffers of one parent, parent released first",
    "m_parent_first_one": "raw: 1 live sub-buffer, parent released first",
    "m_parent_first_two": "raw: 2 disjoint live sub-buffers, parent released first",
    "m_parent_first_nokernel": "raw: 3 live sub-buffers never used by a command, parent released first",
    "m_copy_same": "raw: enqueue_copy between 2 sub-buffers of one parent, then subs, parent released",
    "m_copy_same_pf": "raw: enqueue_copy between 2 sub-buffers of one parent, parent released first",
    "m_copy_two_parents": "raw: enqueue_copy between sub-buffers of 2 parents, subs then parents released",
    "m_kernel2": "raw: one kernel reads sub-buffer 1, writes sub-buffer 2 of one parent; subs, parent released",
    "m_write_read": "raw: non-blocking write to a sub-buffer, blocking read of another; subs, parent released",
    "trace": "fixed executable, every release printed",
    "hostcopy": "fixed executable, BufferCopy through the host instead of enqueue_copy",
    "kcopy": "fixed executable, BufferCopy by a copy kernel instead of enqueue_copy",
    "bw": "fixed executable, blocking uploads",
    "m_same_origin": "raw: 3 sub-buffers at the same origin, different sizes, used by kernels; subs then parent",
    "m_partial": "raw: 6 partially overlapping sub-buffers used by kernels; subs then parent",
    "m_same_origin_nokernel": "raw: 3 sub-buffers at the same origin, different sizes, unused; subs then parent",
    "tune_keep": "opencl_tune.py on mobilenet_v2 with every executable kept alive (never freed)",
    "tunefind": "every tuner candidate of mobilenet_v2 run alone with a finish: the first that fails",
    "fifo": "shipped fix (one sub-buffer per origin) but sub-buffers released oldest first",
    "rel_lifo": "fixed executable, sub-buffers released newest first",
    "rel_parent_first": "fixed executable, parents released before the sub-buffers",
    "rel_none": "fixed executable, arena views and parents never released (leak)",
    "m_kernels_last": "raw: 3 sub-buffers, each a kernel argument; subs, parent, then the kernels released",
    "m_overlap_parent_first": "raw: 3 overlapping sub-buffers used by kernels, parent released first",
}


def micro(variant: str) -> int:
    """Raw pyopencl: a parent, sub-buffers written by a kernel, released in a given order."""
    import pyopencl as cl

    from edgeinfer.backends.opencl.runtime import select_device

    dev = select_device("opencl")
    ctx, queue = dev.context, cl.CommandQueue(dev.context)
    align = dev.device.mem_base_addr_align // 8
    prg = cl.Program(ctx, "__kernel void k(__global float *a) { a[get_global_id(0)] = 1.0f; }").build()
    count = {"m_parent_first_one": 1, "m_parent_first_two": 2}.get(variant, 3)
    prg2 = cl.Program(ctx, "__kernel void k2(__global const float *a, __global float *b) "
                      "{ b[get_global_id(0)] = a[get_global_id(0)] + 1.0f; }").build()
    if variant in ("m_same_origin", "m_partial", "m_same_origin_nokernel"):
        for trial in range(20):
            parent = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 64 * align)
            if variant == "m_partial":
                regions = [(align * (1 + i), 4 * align) for i in range(6)]
            else:
                regions = [(align, 1024 * (i + 1)) for i in range(3)]
            subs = [parent.get_sub_region(o, n) for o, n in regions]
            if variant != "m_same_origin_nokernel":
                for sub in subs:
                    kernel = cl.Kernel(prg, "k")
                    kernel.set_args(sub)
                    cl.enqueue_nd_range_kernel(queue, kernel, (256,), None)
                    del kernel
                queue.finish()
            for i in range(len(subs)):
                print(f"  trial {trial}: releasing sub {i}", flush=True)
                subs[i].release()
            parent.release()
            print(f"  trial {trial}: released", flush=True)
            del subs, parent
        print(f"  RESULT {variant}: 20 trials ok", flush=True)
        return 0
    if variant in ("m_copy_same", "m_copy_same_pf", "m_copy_two_parents", "m_kernel2", "m_write_read"):
        host = np.ones(256, np.float32)
        for trial in range(20):
            parent = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 64 * align)
            other = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 64 * align) if variant == "m_copy_two_parents" else parent
            s1, s2 = parent.get_sub_region(align, 1024), other.get_sub_region(align * (1 + -(-2048 // align)), 1024)
            cl.enqueue_copy(queue, s1, host, is_blocking=False)
            if variant.startswith("m_copy"):
                cl.enqueue_copy(queue, s2, s1, byte_count=1024)
            elif variant == "m_kernel2":
                k2 = cl.Kernel(prg2, "k2")
                k2.set_args(s1, s2)
                cl.enqueue_nd_range_kernel(queue, k2, (256,), None)
            else:
                cl.enqueue_copy(queue, s2, host, is_blocking=False)
            out = np.empty(256, np.float32)
            cl.enqueue_copy(queue, out, s2)
            queue.finish()
            if variant == "m_copy_same_pf":
                del parent, other
            print(f"  trial {trial}: {out[:2]} releasing", flush=True)
            del s1
            del s2
            parent = other = None
            print(f"  trial {trial}: released", flush=True)
        print(f"  RESULT {variant}: 20 trials ok", flush=True)
        return 0
    for trial in range(20):
        parent = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 64 * align)
        step = 0 if variant == "m_overlap_parent_first" else 4
        subs = [parent.get_sub_region(align * (1 + step * i), 1024) for i in range(count)]
        kernels = []
        if variant != "m_parent_first_nokernel":
            for sub in subs:
                kernel = cl.Kernel(prg, "k")
                kernel.set_args(sub)
                kernels.append(kernel)
                cl.enqueue_nd_range_kernel(queue, kernel, (256,), None)
            queue.finish()
            del kernel
        if variant == "m_kernels_last":
            subs.clear()
            del parent
            print(f"  trial {trial}: buffers released", flush=True)
            kernels.clear()
        elif variant == "m_subs_first":
            kernels.clear()
            subs.clear()
            del parent
        else:
            kernels.clear()
            del parent
            print(f"  trial {trial}: parent released", flush=True)
            subs.clear()
            print(f"  trial {trial}: subs released", flush=True)
    print(f"  RESULT {variant}: 20 trials ok", flush=True)
    return 0



LEAK: list = []


def apply_variant(variant: str) -> None:
    import pyopencl as cl

    from edgeinfer.backends.opencl import executor, memory

    if variant in ("noarena", "plain"):
        memory.GuardedAllocator.in_arena = lambda self, arena, offset, nbytes: None
    if variant in ("nozc", "plain"):
        executor.OpenCLExecutable._zero_copy_concats = lambda self: {}
    if variant == "plain":

        def tensor(self, nbytes):
            buffer = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, max(nbytes, 4) + self.guard)
            self.parents.append(buffer)
            return buffer

        memory.GuardedAllocator.tensor = tensor
    if variant == "fifo":
        def release(self):
            for buffer in [*self.views, *self.parents]:
                buffer.release()
            self.views.clear()
            self.parents.clear()

        memory.GuardedAllocator.release = release
    if variant.startswith("rel_"):
        def release(self):
            views, parents = list(self.views), list(self.parents)
            if variant in ("rel_lifo",):
                order = [*reversed(views), *parents]
            elif variant == "rel_parent_first":
                order = [*parents, *views]
            else:
                LEAK.append((views, parents))
                order = []
            for i, buffer in enumerate(order):
                print(f"    release {i} size {buffer.size} ...", end="", flush=True)
                buffer.release()
                print(" ok", flush=True)
            self.views.clear()
            self.parents.clear()

        memory.GuardedAllocator.release = release
    if variant == "trace":
        def release(self):
            for i, buffer in enumerate([*self.views, *self.parents]):
                kind = "view" if i < len(self.views) else "parent"
                try:
                    origin = buffer.get_info(cl.mem_info.OFFSET)
                except cl.Error:
                    origin = "?"
                print(f"    release {i} {kind} size {buffer.size} origin {origin} ...", end="", flush=True)
                buffer.release()
                print(" ok", flush=True)
            self.views.clear()
            self.parents.clear()

        memory.GuardedAllocator.release = release
    if variant in ("hostcopy", "kcopy"):
        from edgeinfer.backends.opencl.kernels import BufferCopy

        orig = executor.OpenCLExecutable._launch_step

        def launch_step(self, index, launch):
            if not isinstance(launch, BufferCopy):
                return orig(self, index, launch)
            src, dst = self.buffers[launch.src], self.buffers[launch.dst]
            nbytes = self.graph.tensors[launch.dst].nbytes
            if variant == "hostcopy":
                def fn(env, queue):
                    host = np.empty(nbytes, np.uint8)
                    cl.enqueue_copy(queue, host, src)
                    cl.enqueue_copy(queue, dst, host)
            else:
                prg = cl.Program(self.context, "__kernel void c(__global const uchar *a, __global uchar *b)"
                                 " { b[get_global_id(0)] = a[get_global_id(0)]; }").build()
                kernel = cl.Kernel(prg, "c")
                kernel.set_args(src, dst)
                self._keep = getattr(self, "_keep", []) + [prg]

                def fn(env, queue):
                    return cl.enqueue_nd_range_kernel(queue, kernel, (nbytes,), None)
            return executor.Step(index, "copy", fn, "copy")

        executor.OpenCLExecutable._launch_step = launch_step
    if variant == "bw":
        def to_device(self, index, name):
            buffer = self.buffers[name]
            info = self.graph.tensors.get(name)

            def write(env, queue):
                host = np.ascontiguousarray(env[name], dtype=info.dtype if info else None)
                env[name] = host
                return cl.enqueue_copy(queue, buffer, host, is_blocking=True)

            return executor.Step(index, "to_device", write, f"write {name}")

        executor.OpenCLExecutable._to_device = to_device
    if variant == "nofix":
        executor.OpenCLExecutable.close = lambda self: None
    if variant == "bigguard":
        memory.GUARD_BYTES = 65536


def child(variant: str, models: list[str]) -> int:
    faulthandler.enable()
    if variant.startswith("m_"):
        return micro(variant)
    if variant == "tunefind":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from opencl_tune import candidates, plan_workload, single_node_graph

        from edgeinfer.backends import opencl
        from edgeinfer.backends.opencl.kernels import NoKernel, PlanContext, plan_node
        from edgeinfer.compiler import compile_model
        from edgeinfer.tuned_configs import ConfigTable

        dev = opencl.runtime.select_device("opencl")
        graph = compile_model(SHARED / "models" / "mobilenet_v2_1.0_224.onnx")
        seen = set()
        count = 0
        for node in graph.nodes:
            if node.op != "Conv":
                continue
            ctx = PlanContext(graph, ConfigTable("opencl", ""), dev.info.kind, dev.device.max_work_group_size)
            try:
                plan = plan_node(node, ctx)
            except NoKernel:
                continue
            workload = plan_workload(node, graph, ctx, plan.template)
            key = (plan.template, str(sorted(workload.items())))
            if key in seen:
                continue
            seen.add(key)
            single, feeds = single_node_graph(graph, node)
            for config in candidates(plan.template, workload, dev.info.kind):
                exe = opencl.prepare(single, "opencl", overrides={plan.template: config})
                launch = exe.records[0].plan.launches[0]
                try:
                    exe.run(feeds)
                    exe.queue.finish()
                except Exception as e:  # noqa: BLE001
                    print(f"  RESULT FAIL {node.name} {plan.template} {workload} {config} global "
                          f"{launch.global_size} local {launch.local} defines {launch.defines}: {e}", flush=True)
                    return 1
                count += 1
            print(f"  RESULT ok {plan.template} {workload} ({count} configs so far)", flush=True)
            if count > 250:
                break
        return 0
    if variant.startswith("tune"):
        import runpy

        sys.path.insert(0, str(REPO / "benchmarks"))
        if variant == "tune_nofix":
            apply_variant("nofix")
        if variant == "tune_keep":
            from edgeinfer.backends import opencl

            real_prepare = opencl.prepare

            def keep(*a, **k):
                LEAK.append(real_prepare(*a, **k))
                return LEAK[-1]

            opencl.prepare = keep
        sys.argv = ["opencl_tune.py", "--models", "mobilenet_v2_1.0_224.onnx", "--rounds", "1", "--repeat", "1",
                    "--out", f"/tmp/tune_{variant}.json"]  # fmt: skip
        runpy.run_path(str(REPO / "benchmarks" / "opencl_tune.py"), run_name="__main__")
        return 0
    apply_variant(variant)
    from edgeinfer.backends import numpy_backend, opencl
    from edgeinfer.compiler import compile_model

    dev = opencl.runtime.select_device("opencl")
    d = dev.device
    print(f"[{variant}] device {d.name} driver {d.driver_version} align {d.mem_base_addr_align} "
          f"maxwg {d.max_work_group_size} maxalloc {d.max_mem_alloc_size >> 20} MiB", flush=True)
    for model in models:
        graph = compile_model(SHARED / "models" / model)
        rng = np.random.default_rng(0)
        feeds = {n: rng.uniform(0, 1, graph.tensors[n].shape).astype(graph.tensors[n].dtype) for n in graph.inputs}
        expected = numpy_backend.prepare(graph).run(feeds)
        if variant == "manyexe":
            from opencl_tune import single_node_graph

            node = next(n for n in graph.nodes if n.op == "Conv")
            single, sfeeds = single_node_graph(graph, node)
            exes = []
            for i in range(80):
                exes.append(opencl.prepare(single, "opencl"))
                exes[-1].run(sfeeds)
                if i % 10 == 0:
                    print(f"  exe {i} ok", flush=True)
            for ex in exes:
                ex.profile(sfeeds, repeat=2)
            print(f"  manyexe {model}: 80 executables ok", flush=True)
            continue
        exe = opencl.prepare(graph, "opencl")
        print(f"  {model}: prepared, {len(exe.steps)} steps, aliases {len(exe.aliases)}", flush=True)
        if variant == "steps":
            env = dict(graph.constants)
            env.update(feeds)
            for i, step in enumerate(exe.steps):
                node = exe.records[step.node_index].node.name if step.node_index >= 0 else "-"
                print(f"    step {i} {step.kind} {step.label} node {node} ...", end="", flush=True)
                step.fn(env, exe.queue)
                exe.queue.finish()
                print(" ok", flush=True)
            got = {n: env[n] for n in graph.outputs}
        else:
            got = exe.run(feeds)
        for _ in range(3):
            got = exe.run(feeds)
        err = max(float(np.linalg.norm(got[n] - v) / max(np.linalg.norm(v), 1e-30)) for n, v in expected.items())
        t0 = time.perf_counter()
        for _ in range(20):
            exe.run(feeds)
        ms = (time.perf_counter() - t0) / 20 * 1e3
        print(f"  RESULT {variant} {model}: rel L2 {err:.2e} {ms:.3f} ms/run", flush=True)
        import gc

        del exe
        gc.collect()
        print(f"  RESULT {variant} {model}: executable freed", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["squeezenet1.1.onnx", "mobilenet_v2_1.0_224.onnx"])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.models)
    for variant in args.variants.split(","):
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--child", variant, "--models",
                                   *args.models], capture_output=True, text=True, timeout=args.timeout)  # fmt: skip
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            out = b"".join(x for x in (e.stdout, e.stderr) if isinstance(x, bytes))
            rc, out = "timeout", out.decode(errors="replace")
        lines = out.strip().splitlines()
        keep = [ln for ln in lines if "RESULT" in ln or "] device" in ln or "manyexe" in ln or " -> " in ln]
        print(f"=== {variant} ({VARIANTS[variant]}): rc {rc} in {time.perf_counter() - start:.1f}s")
        for ln in keep:
            print("   ", ln)
        if rc != 0:
            print("    --- tail ---")
            for ln in lines[-25:]:
                print("   ", ln[:300])
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
