"""fp16 packs on GPUs: float tensors stored as half, arithmetic in float (issue 16, docs/fp16.md).

An fp16 pack (``edgeinfer compile --fp16``) asks GPU executables to keep every float32 tensor of the graph as half in
device memory: activations, weights and biases. The kernels read and write such tensors through common.cl's
``data_t`` (LD/ST, LOADN/STOREN): loads widen to float, stores round to nearest, and every sum is a float sum. So a
launch changes in three ways, which :func:`store_as_half` makes after its planner has chosen it:

- its program is built with ``DATA_HALF`` (data_t = half);
- a float32 constant bound to a ``data_t`` parameter is uploaded as float16 (a ``float`` parameter, such as the
  resize weights or the activation parameters of unary_chain, stays float32);
- a float tensor bound to a parameter declared ``float *`` would be read as the wrong type: such a kernel has no
  half-storage form, and the node runs on the host (NoKernel says so).

The executor lays memory out for :func:`storage_graph`, the graph with its float32 tensors as float16 and a memory
plan for those sizes; the planners keep seeing float32 (the compute type). What crosses to the host (inputs, outputs,
the tensors of host nodes) crosses as float32 through a staging buffer, converted on the device
(:func:`boundary_conversion`), and host nodes and ``run`` see float32.
"""

from __future__ import annotations

import dataclasses
import os
import re
from functools import cache

import numpy as np

from edgeinfer.ir import Graph
from edgeinfer.passes.memory_plan import plan_memory
from edgeinfer.passes.precision import PRECISION_KEY
from edgeinfer.planning.plan import BufferCopy, GuardedTensorArg, KernelPlan, Launch, NoKernel, TensorArg
from edgeinfer.planning.templates import kernel_source

STORAGE_ENV = "EDGEINFER_FP16_STORAGE"  # "0": run an fp16 pack with float storage (its weights widened)
HALF_BITS = "ushort"  # the element type tensor.cl moves half tensors as (their 16-bit patterns)

_PARAMETERS = re.compile(r"__kernel\s+void\s+(\w+)\s*\(([^)]*)\)", re.S)


def wants_half_storage(graph: Graph, device_kind: str) -> bool:
    """Whether an executable of ``graph`` on a device of ``device_kind`` stores float tensors as half: fp16 packs on
    GPUs. CPUs run the channel-blocked kernels, which are float only: there an fp16 pack runs as fp32."""
    value = os.environ.get(STORAGE_ENV, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{STORAGE_ENV}={value!r}: expected 0 or 1")
    return value == "1" and graph.metadata.get(PRECISION_KEY) == "fp16" and device_kind == "gpu"


@cache
def parameter_kinds(template: str, kernel: str) -> tuple[str, ...]:
    """Per parameter of ``kernel``: "data" (declared data_t), "float" (declared float *), "element" (declared T:
    tensor.cl's element type, a build option) or "other"."""
    for match in _PARAMETERS.finditer(kernel_source(template, kernel)):
        if match.group(1) == kernel:
            kinds = []
            for parameter in match.group(2).split(","):
                words = parameter.replace("*", " * ").split()
                kinds.append("data" if "data_t" in words else "float" if "float" in words and "*" in words
                             else "element" if "T" in words else "other")  # fmt: skip
            return tuple(kinds)
    raise ValueError(f"kernel {kernel!r} not found in template {template!r}")


def store_as_half(plan: KernelPlan, float_tensors: set[str]) -> KernelPlan:
    """``plan`` with half storage (module docstring); raises NoKernel if one of its kernels has no such form.
    ``float_tensors``: the graph's float32 tensors."""
    for launch in plan.launches:
        if isinstance(launch, BufferCopy):
            continue
        kinds = parameter_kinds(launch.template, launch.kernel)
        args, slot = [], 0
        for arg in launch.args:
            kind = kinds[slot] if slot < len(kinds) else "other"
            slot += 2 if isinstance(arg, GuardedTensorArg) else 1  # (buffer, offset)
            if isinstance(arg, TensorArg) and arg.name in float_tensors and kind == "float":
                raise NoKernel(f"{launch.kernel} reads or writes {arg.name!r} as float: no half-storage form")
            # A float constant read as data, or moved as half bits by tensor.cl (a Concat's constant input).
            moved_as_half = kind == "element" and launch.defines.get("T") == HALF_BITS
            if isinstance(arg, np.ndarray) and arg.dtype == np.float32 and (kind == "data" or moved_as_half):
                arg = arg.astype(np.float16)
            args.append(arg)
        launch.args = args
        launch.defines = {**launch.defines, "DATA_HALF": 1}
    return plan


def storage_graph(graph: Graph) -> Graph:
    """``graph`` as half storage lays it out: float32 tensors as float16, the memory plan redone for their sizes.
    Nodes and constants are shared (constants stay float32: executables convert what they upload)."""
    tensors = {name: dataclasses.replace(info, dtype="float16") if info.dtype == "float32" else info
               for name, info in graph.tensors.items()}  # fmt: skip
    stored = dataclasses.replace(graph, tensors=tensors, metadata=dict(graph.metadata))
    plan_memory(stored, graph.memory_plan.alignment)
    return stored


def stored_dtype(dtype: np.dtype | str, half: bool) -> np.dtype:
    """The dtype a tensor of ``dtype`` has in device memory: float16 for float32 under half storage."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float16) if half and dtype == np.float32 else dtype


def stored_constant(array: np.ndarray) -> np.ndarray:
    """A constant graph tensor as half storage uploads it."""
    return array.astype(stored_dtype(array.dtype, True), copy=False)


def float_tensor_names(graph: Graph) -> set[str]:
    return {name for name, info in graph.tensors.items() if info.dtype == "float32"} | {
        name for name, array in graph.constants.items() if array.dtype == np.float32}  # fmt: skip


def boundary_conversion(to_half: bool, count: int, source: object, target: object) -> Launch:
    """The launch that converts a stored tensor of ``count`` elements at the host boundary: a float32 staging buffer
    into the half tensor (``to_half``, after an upload) or the half tensor into the staging buffer (before a
    download). ``source`` and ``target`` are whatever the executor binds (TensorArg, a buffer)."""
    kernel = "half_from_float" if to_half else "float_from_half"
    work = (max(count, 1),)
    return Launch("elementwise", kernel, [source, target, np.int32(count)], work, (min(256, work[0]),),
                  {"DATA_HALF": 1})  # fmt: skip
