"""Run every GPU kernel plan of a pack once through CUDA (CuPy) and compare each node with its NumPy reference op.

For the GPU machine, before the CUDA executor exists: each device node is planned by the OpenCL planners on a
GPU-kind context (the device's OpenCL tuned table, as the CUDA backend will plan), its launches compiled from
kernels/cuda (the OpenCL templates through opencl_compat.cuh, edgeinfer/backends/cuda/sources.py) by the CUDA
program cache, and run in order on random inputs shaped from the graph; buffer copies run as device copies.
Every tensor gets its own buffer with a NaN-filled guard band on both sides (the kernels may read the guard,
never use it), a guarded tensor is passed as (pointer to the guard start, offset in elements) as on OpenCL.

    python benchmarks/cuda_kernel_check.py model.pack [--device cuda:0] [--tolerance 1e-4]

Prints a table (node, op, kernels, error) and exits 1 if any node is off. Plan rewrites of the executor
(residual-Add fusion, zero-copy concats) are not applied: nodes run one by one. Before the table, one line
says whether denormals survive (CuPy's own compile cache would flush them: program_cache.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgeinfer.backends.cuda import program_cache, runtime
from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS, program_source
from edgeinfer.cpu_isa import ISA_CLASSES
from edgeinfer.ir import DEVICE, Graph, Node
from edgeinfer.ops import get_op
from edgeinfer.pack import read_pack
from edgeinfer.planning import BufferCopy, Launch, NoKernel, PlanContext, TensorArg, layout, plan_node
from edgeinfer.planning.plan import GuardedTensorArg
from edgeinfer.tuned_configs import load_table, sanitize_key

GUARD_BYTES = 256  # as the OpenCL allocator's guard band (opencl/memory.py GUARD_BYTES)
POSITIVE_INPUT_OPS = {"Log", "Sqrt", "Reciprocal", "Pow", "Div"}  # random inputs in [0.5, 1.5): no NaN by design

_DENORMAL_SOURCE = 'extern "C" __global__ void scale(float *x) { x[threadIdx.x] *= 1e-10f; }'


def denormals_kept(info) -> bool:
    import cupy

    module = program_cache.load_module(_DENORMAL_SOURCE, NVRTC_OPTIONS, info)
    x = cupy.full(1, 1e-30, dtype=cupy.float32)
    module.get_function("scale")((1,), (1,), (x,))
    return float(x.get()[0]) != 0.0  # 1e-40 is a float32 denormal; FTZ makes it 0


class DeviceTensors:
    """One guarded device buffer per tensor: NaN guard, tensor bytes, NaN guard."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.buffers: dict[str, object] = {}

    def buffer(self, name: str):
        import cupy

        if name not in self.buffers:
            nbytes = (
                self.graph.tensors[name].nbytes if name in self.graph.tensors else self.graph.constants[name].nbytes
            )
            raw = cupy.full(GUARD_BYTES + nbytes + GUARD_BYTES, 0xFF, dtype=cupy.uint8)  # 0xFFFFFFFF is a NaN
            self.buffers[name] = raw
        return self.buffers[name]

    def tensor(self, name: str):
        return self.buffer(name)[GUARD_BYTES:-GUARD_BYTES]

    def upload(self, name: str, value: np.ndarray) -> None:
        import cupy

        self.tensor(name)[...] = cupy.asarray(np.ascontiguousarray(value).view(np.uint8).reshape(-1))

    def download(self, name: str) -> np.ndarray:
        info = self.graph.tensors[name]
        return self.tensor(name).get().view(np.dtype(info.dtype)).reshape(info.shape)


def random_value(info, rng: np.random.Generator, positive: bool) -> np.ndarray:
    dtype = np.dtype(info.dtype)
    if dtype == np.float32:
        low, high = (0.5, 1.5) if positive else (-1.0, 1.0)
        return rng.uniform(low, high, info.shape).astype(np.float32)
    if dtype in (np.uint8, np.int8):
        bounds = np.iinfo(dtype)
        return rng.integers(bounds.min, bounds.max + 1, info.shape).astype(dtype)
    return rng.integers(0, 2, info.shape).astype(dtype)  # indices: small, valid along any axis


def kernel_args(launch: Launch, tensors: DeviceTensors) -> tuple:
    import cupy

    args = []
    for arg in launch.args:
        if isinstance(arg, GuardedTensorArg):
            itemsize = np.dtype(tensors.graph.tensors[arg.name].dtype).itemsize
            args += [tensors.buffer(arg.name), np.int32(GUARD_BYTES // itemsize)]
        elif isinstance(arg, TensorArg):
            args.append(tensors.tensor(arg.name))
        elif isinstance(arg, np.ndarray):
            args.append(cupy.asarray(np.ascontiguousarray(arg)))
        else:
            args.append(arg)
    return tuple(args)


def run_launch(launch: Launch, tensors: DeviceTensors, info) -> None:
    kernel = program_cache.load_module(program_source(launch.template, launch.defines), NVRTC_OPTIONS, info)
    grid = tuple(-(-w // lo) for w, lo in zip(launch.work, launch.local))
    pad = (1,) * (3 - len(launch.local))
    kernel.get_function(launch.kernel)(grid + pad, tuple(launch.local) + pad, kernel_args(launch, tensors))


def compare(got: np.ndarray, want: np.ndarray, tolerance: float) -> tuple[str, bool]:
    """(error text, within tolerance) for one output."""
    if got.shape != want.shape:
        return f"shape {got.shape} vs {want.shape}", False
    if np.issubdtype(want.dtype, np.integer):
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        return f"{int((diff > 0).sum())} differ (max {int(diff.max(initial=0))})", bool(diff.max(initial=0) == 0)
    nan_mismatch = int((np.isnan(got) != np.isnan(want)).sum())
    finite = np.isfinite(want) & np.isfinite(got)
    g, w = got[finite].astype(np.float64), want[finite].astype(np.float64)
    rel = float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-30))
    return f"{rel:.2e}" + (
        f" ({nan_mismatch} NaN differ)" if nan_mismatch else ""
    ), nan_mismatch == 0 and rel <= tolerance


def check_node(node: Node, ctx: PlanContext, info, rng: np.random.Generator, tolerance: float) -> tuple[str, str, bool]:
    """(kernels, error, ok) of one device node."""
    graph = ctx.graph
    plan = plan_node(node, ctx)
    launches = [launch for launch in plan.launches if isinstance(launch, (Launch, BufferCopy))]
    if not launches:
        return "(no launches)", "-", True
    tensors = DeviceTensors(graph)
    env: dict[str, np.ndarray] = {}
    for name in node.inputs:
        if not name:
            continue
        value = graph.constants.get(name)
        if value is None:
            value = random_value(graph.tensors[name], rng, node.op in POSITIVE_INPUT_OPS)
        env[name] = value
        tensors.upload(name, value)
    for launch in launches:
        if isinstance(launch, BufferCopy):
            tensors.tensor(launch.dst)[...] = tensors.tensor(launch.src)
            continue
        for arg in launch.args:  # constants a launch names as tensors
            if isinstance(arg, TensorArg) and arg.name in graph.constants and arg.name not in tensors.buffers:
                tensors.upload(arg.name, graph.constants[arg.name])
        run_launch(launch, tensors, info)
    import cupy

    cupy.cuda.Device(info.details["ordinal"]).synchronize()
    reference = get_op(node.op).fn([env.get(name) if name else None for name in node.inputs], node.attrs)
    errors, ok = [], True
    for name, want in zip(node.outputs, reference):
        if not name:
            continue
        text, good = compare(tensors.download(name), np.asarray(want), tolerance)
        errors.append(text)
        ok = ok and good
    kernels = ",".join(dict.fromkeys(x.kernel if isinstance(x, Launch) else "copy" for x in launches))
    return kernels, "; ".join(errors), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest rel L2 error of a float output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    devices = {d.spec: d for d in runtime.list_devices()}
    info = devices.get(args.device)
    if info is None or not info.usable:
        print(f"no usable CUDA device {args.device}: {[(d.spec, d.reason) for d in devices.values()]}")
        return 2
    import cupy

    cupy.cuda.Device(info.details["ordinal"]).use()
    print(f"{info.name} ({info.device_key}, NVRTC {info.details['nvrtc_version']}, driver "
          f"{info.details['driver_version']}, cupy {info.details['cupy_version']})")  # fmt: skip
    print(f"denormals kept (no flush to zero): {denormals_kept(info)}")

    graph = layout.for_device(read_pack(args.pack), "gpu", ISA_CLASSES["simt"])
    opencl_key = sanitize_key(f"NVIDIA CUDA NVIDIA Corporation {info.name}")  # this device's OpenCL table
    table = load_table("opencl", opencl_key, "nvidia-cuda-gpu", "simt")

    def work_group_limit(launch: Launch) -> int:
        module = program_cache.load_module(program_source(launch.template, launch.defines), NVRTC_OPTIONS, info)
        return int(module.get_function(launch.kernel).max_threads_per_block)

    ctx = PlanContext(graph, table, "gpu", info.details["max_work_group_size"], work_group_limit=work_group_limit)
    rng = np.random.default_rng(args.seed)
    rows, failures, started = [], 0, time.perf_counter()
    for node in graph.nodes:
        if node.placement != DEVICE:
            rows.append((node.name, node.op, "(host: placed on the CPU)", "-", "host"))
            continue
        try:
            kernels, error, ok = check_node(node, ctx, info, rng, args.tolerance)
        except NoKernel as e:
            rows.append((node.name, node.op, f"(host: {e})", "-", "host"))
            continue
        except Exception as e:  # noqa: BLE001 - a build or launch error is this node's result; the rest still run
            kernels, error, ok = "?", f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", False
        failures += not ok
        rows.append((node.name, node.op, kernels, error, "ok" if ok else "FAIL"))
    header = ("node", "op", "kernels", "rel L2 / diffs", "")
    widths = [min(60, max(len(str(r[i])) for r in [header, *rows])) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(str(c)[:60].ljust(w) for c, w in zip(row, widths)))
    checked = sum(r[4] != "host" for r in rows)
    seconds = time.perf_counter() - started
    print(f"{checked} device nodes checked, {failures} off (tolerance {args.tolerance:g}), {seconds:.1f} s; "
          f"programs: {program_cache.STATS}")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
