"""What OpenCL's fma() costs on each PoCL target against mad() and a multiply and an add (common.cl's MAC):

    python benchmarks/fma_cost.py                                                  # the host's target
    POCL_LLVM_CPU_NAME=x86-64 POCL_KERNELLIB_NAME=sse2 python benchmarks/fma_cost.py  # SSE2, no FMA instruction

A dependent chain of float4 multiply-adds (20,000 steps x 1,024 work-items, work-groups of one) on the first
OpenCL device; where the target has no FMA instruction PoCL emulates the exactly rounded fma() in software.
"""

from __future__ import annotations

import time

import numpy as np
import pyopencl as cl

SOURCE = """
__kernel void chain(__global float4 *y, int n) {
    float4 a = (float4)(get_global_id(0) * 1e-6f), b = (float4)(0.999f), c = (float4)(0.5f);
    for (int i = 0; i < n; ++i) { c = OP(a, b, c); a = OP(c, b, a); }
    y[get_global_id(0)] = a + c;
}"""
VARIANTS = {"fma": "-DOP=fma", "mad": "-DOP=mad", "mul+add": "-DOP(a,b,c)=((a)*(b)+(c))"}


def main() -> None:
    context = cl.Context(cl.get_platforms()[0].get_devices()[:1])
    queue = cl.CommandQueue(context)
    print(context.devices[0].name)
    y = cl.Buffer(context, cl.mem_flags.WRITE_ONLY, 1024 * 16)
    for name, options in VARIANTS.items():
        kernel = cl.Kernel(cl.Program(context, SOURCE).build(options=options), "chain")
        kernel(queue, (1024,), (1,), y, np.int32(100))
        queue.finish()
        start = time.perf_counter()
        kernel(queue, (1024,), (1,), y, np.int32(20000))
        queue.finish()
        print(f"{name:8s} {(time.perf_counter() - start) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
