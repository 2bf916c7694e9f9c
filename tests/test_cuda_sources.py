"""The CUDA kernel sources (kernels/cuda/opencl_compat.cuh over the OpenCL templates) compile with nvcc, for every
program the shared models' GPU plans need, and each launch finds its kernel with the parameters it passes.

No GPU is needed: nvcc compiles to PTX, whose ``.entry`` lines name the kernels and list their parameters. The
plans are the OpenCL planners' on a GPU-kind context with the NVIDIA H200's tuned table, as the CUDA backend will
plan them (docs/cuda.md). The semantics of the compat header are checked on the host (nvcc builds host code too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, REPO, shared_model
from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS, compat_header, cuda_dialect, program_source
from edgeinfer.cpu_isa import ISA_CLASSES
from edgeinfer.ir import DEVICE, Graph
from edgeinfer.planning import Launch, NoKernel, PlanContext, TensorArg, layout, plan_node
from edgeinfer.planning.plan import GuardedTensorArg, ScratchArg
from edgeinfer.tuned_configs import ConfigTable, read_table

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (the CUDA toolkit compiles the CUDA sources)")

H200_TABLE = REPO / "tuned_configs" / "opencl" / "nvidia-cuda-nvidia-corporation-nvidia-h200.json"
H200_MAX_WORK_GROUP = 1024
# Every shared model, the detectors with their decoder appended (it runs on the device too).
MODEL_PRESETS = {
    "squeezenet1.1.onnx": None,
    "mobilenet_v2_1.0_224.onnx": None,
    "mobilenet_v2_1.0_224_qdq_uint8.onnx": None,
    "mobilenet_v1_0.25_128.onnx": None,
    "yolox_nano_416.onnx": "yolox",
    "fastestdet_352.onnx": "fastestdet",
    "ultraface_rfb_320.onnx": "ultraface",
}
# Knob sets that together reach every kernel and every #if branch of the GPU templates (blocked.cl serves only CPU
# devices: layout.py), also those the shared models' plans do not use today.
VARIANTS = {
    "conv2d": [dict(TM=4, TN=8, KH=3, KW=3, SW=1, DW=1, BCAST=0), dict(TM=3, TN=16, KH=3, KW=3, SW=2, DW=1, BCAST=1),
               dict(TM=8, TN=4, KH=1, KW=5, SW=2, DW=2, BCAST=0), dict(TM=16, TN=4, KH=3, KW=3, SW=3, DW=1, BCAST=0)],
    "conv_gemm": [dict(TM=4, TN=4, WM=16, WN=16, BK=16, SPLIT=1, KH=3, KW=3, SH=1, SW=1, DH=1, DW=1),
                  dict(TM=8, TN=2, WM=8, WN=8, BK=8, SPLIT=4, KH=1, KW=1, SH=2, SW=2, DH=1, DW=1)],
    "depthwise": [dict(TN=8, TY=4, KH=3, KW=3, SH=1, SW=1, DH=1, DW=1, NC=64),
                  dict(TN=4, TY=2, KH=5, KW=5, SH=2, SW=2, DH=2, DW=2, NC=64),
                  dict(TN=8, TC=4, KH=3, KW=3, SW=1, DH=1, DW=1, NC=64)],
    "gemm": [dict(RG=128), dict(WM=8, WN=16, TM=4, TN=4, BK=16), dict(NV=2, TM=4),
             dict(VEC_N=1, TM=8, TN=8, UNROLL_K=4), dict(TM=4, TN=3, UNROLL_K=2)],
    "pool": [{}, dict(TN=8, SW=1, DW=2), dict(TN=8, SW=2, DW=1, KH=3, KW=3, SH=2)],
    "elementwise": [dict(VW=4, QTYPE="uchar"), dict(VW=8, QTYPE="char")],
    "softmax": [{}, dict(WG=256)],
    "resize": [{}],
    "tensor": [dict(T=t) for t in ("float", "uchar", "char", "int", "long", "ushort")],  # ushort: half tensors
    "preprocess": [dict(OUT_FLOAT=0), dict(OUT_FLOAT=1)],
}  # fmt: skip
# nvcc's own flags for NVRTC's (sources.py NVRTC_OPTIONS): the same floating-point contract.
NVCC_FLAGS = [option.replace("--diag-suppress=", "-diag-suppress=") for option in NVRTC_OPTIONS]


def gpu_plan_context(graph: Graph) -> PlanContext:
    """The context the OpenCL executor plans with on the H200, without a device: GPU kind, no channel-blocked
    layout, the H200's table."""
    table = read_table(H200_TABLE, "opencl", H200_TABLE.stem) if H200_TABLE.is_file() else ConfigTable("opencl", "")
    return PlanContext(layout.for_device(graph, "gpu", ISA_CLASSES["simt"]), table, "gpu", H200_MAX_WORK_GROUP)


def gpu_launches(graph: Graph) -> list[Launch]:
    """Every kernel launch of the graph's device nodes planned for the GPU."""
    ctx = gpu_plan_context(graph)
    launches = []
    for node in ctx.graph.nodes:
        if node.placement != DEVICE:
            continue
        try:
            plan = plan_node(node, ctx)
        except NoKernel:
            continue
        launches += [launch for launch in plan.launches if isinstance(launch, Launch)]
    return launches


def argument_kinds(args: list) -> list[str]:
    """What the CUDA launch passes per argument: a device pointer per tensor or uploaded array (a guarded tensor
    adds its int offset, as on OpenCL), int32 and float32 scalars by value."""
    kinds = []
    for arg in args:
        if isinstance(arg, GuardedTensorArg):
            kinds += ["ptr", "i32"]
        elif isinstance(arg, (TensorArg, ScratchArg, np.ndarray)):
            kinds.append("ptr")
        elif isinstance(arg, np.int32):
            kinds.append("i32")
        elif isinstance(arg, np.float32):
            kinds.append("f32")
        else:
            raise AssertionError(f"argument {arg!r} of type {type(arg).__name__} has no CUDA kind")
    return kinds


PTX_KINDS = {"u64": "ptr", "b64": "ptr", "u32": "i32", "s32": "i32", "b32": "i32", "f32": "f32"}


def ptx_entries(ptx: str) -> dict[str, list[str]]:
    """kernel name -> parameter kinds, from the PTX ``.entry`` declarations."""
    entries = {}
    for name, params in re.findall(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx):
        entries[name] = [PTX_KINDS[kind] for kind in re.findall(r"\.param\s+(?:\.align\s+\d+\s+)?\.(\w+)", params)]
    return entries


def opencl_parameter_counts(template: str) -> dict[str, int]:
    """kernel name -> parameter count in the OpenCL template itself."""
    text = (REPO / "kernels" / "opencl" / f"{template}.cl").read_text()
    return {name: params.count(",") + 1 for name, params in re.findall(r"__kernel\s+void\s+(\w+)\s*\(([^)]*)\)", text)}


def compile_ptx(source: str, tmp_path: Path, stem: str) -> str:
    cu, ptx = tmp_path / f"{stem}.cu", tmp_path / f"{stem}.ptx"
    cu.write_text(source)
    result = subprocess.run([NVCC, "-arch=sm_90", "--ptx", *NVCC_FLAGS, str(cu), "-o", str(ptx)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, f"nvcc failed on {stem}:\n{result.stderr[-4000:]}"
    return ptx.read_text()


@pytest.fixture(scope="module")
def planned_programs() -> dict[tuple[str, tuple], dict[str, list[list[str]]]]:
    """(template, knobs) -> kernel -> the argument kinds of each launch, over every shared model's GPU plans."""
    pytest.importorskip("onnx")
    from edgeinfer.compiler import compile_model
    from edgeinfer.pipelines.config import resolve_pipeline

    programs: dict[tuple[str, tuple], dict[str, list[list[str]]]] = {}
    for file, preset in MODEL_PRESETS.items():
        path = shared_model(file)
        graph = compile_model(path, pipeline=resolve_pipeline(preset) if preset else None)
        for launch in gpu_launches(graph):
            key = (launch.template, tuple(sorted(launch.defines.items())))
            kinds = programs.setdefault(key, {}).setdefault(launch.kernel, [])
            if argument_kinds(launch.args) not in kinds:
                kinds.append(argument_kinds(launch.args))
    return programs


def test_every_gpu_program_compiles_with_its_launches_kernels(planned_programs, tmp_path):
    assert MODELS.is_dir()
    templates = {template for template, _ in planned_programs}
    assert {"conv_gemm", "depthwise", "pool", "elementwise", "tensor"} <= templates
    for index, ((template, knobs), kernels) in enumerate(sorted(planned_programs.items())):
        ptx = compile_ptx(program_source(template, dict(knobs)), tmp_path, f"{index}_{template}")
        entries = ptx_entries(ptx)
        for kernel, launches in kernels.items():
            assert kernel in entries, f"{template} {knobs}: no kernel {kernel!r} in {sorted(entries)}"
            for kinds in launches:
                assert entries[kernel] == kinds, f"{template}.{kernel} {knobs}: takes {entries[kernel]}, given {kinds}"


def test_every_gpu_template_variant_compiles_with_the_opencl_signatures(tmp_path):
    """Every kernel of every GPU template, each #if branch reached by some knob set, compiles; the kernels are the
    OpenCL template's, with its parameter counts."""
    templates = {path.stem for path in (REPO / "kernels" / "opencl").glob("*.cl")} - {"common", "window", "blocked"}
    assert templates == set(VARIANTS)
    for template, variants in VARIANTS.items():
        found: dict[str, int] = {}
        for index, defines in enumerate(variants):
            ptx = compile_ptx(program_source(template, defines), tmp_path, f"{template}_{index}")
            found.update({name: len(kinds) for name, kinds in ptx_entries(ptx).items()})
        assert found == opencl_parameter_counts(template), template


def test_every_gpu_template_variant_compiles_with_half_storage(tmp_path):
    """fp16 packs (planning/half_storage.py): DATA_HALF makes every data_t tensor half, read and written through
    the compat header's vload_half / vstore_half_rte (PTX cvt)."""
    for template, variants in VARIANTS.items():
        for index, defines in enumerate(variants):
            ptx = compile_ptx(program_source(template, {**defines, "DATA_HALF": 1}), tmp_path, f"{template}_{index}")
            assert ptx_entries(ptx), template
            if template in ("conv_gemm", "depthwise", "elementwise", "pool"):
                assert "cvt.rn.f16.f32" in ptx and "cvt.f32.f16" in ptx, (template, defines)


def test_ptx_parameters_count_as_in_the_opencl_templates(planned_programs, tmp_path):
    """Every kernel a plan launches has, in CUDA, the OpenCL kernel's parameter count (names and order come from
    the same text)."""
    seen: dict[str, int] = {}
    for (template, _), kernels in planned_programs.items():
        counts = opencl_parameter_counts(template)
        for kernel, launches in kernels.items():
            # A guarded tensor is one OpenCL parameter pair (pointer, offset) already: counts compare 1:1.
            assert all(len(kinds) == counts[kernel] for kinds in launches), (template, kernel)
            seen[kernel] = counts[kernel]
    assert "conv2d" in seen or "gemm_local" in seen


def test_vector_literals_become_constructor_calls():
    source = "x = (int4)(0, 1, 2, 3); y = (float16)(a.even, b.odd); z = (CAT(T, 16))(p, q); w = (VEC)(0.0f);"
    assert cuda_dialect(source) == (
        "x = int4(0, 1, 2, 3); y = float16(a.even, b.odd); z = CAT(T, 16)(p, q); w = (VEC)(0.0f);"
    )


HOST_CHECK = r"""
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { std::printf("FAILED line %d: %s\n", __LINE__, #cond); ++failures; } } while (0)
int main()
{
    const int4 iota = (int4)(0, 1, 2, 3);                       // a literal, not a comma expression
    CHECK(iota.s0 == 0 && iota.s1 == 1 && iota.s2 == 2 && iota.s3 == 3);
    const float4 twos = (float4)(2.0f);                         // broadcast
    CHECK(twos.x == 2.0f && twos.w == 2.0f);
    const int4 mask = (iota >= 1) & (iota < 3);                 // comparisons give -1 / 0
    CHECK(mask.s0 == 0 && mask.s1 == -1 && mask.s2 == -1 && mask.s3 == 0);
    const float4 picked = select((float4)(0.0f), (float4)(1.0f, 2.0f, 3.0f, 4.0f), mask);
    CHECK(picked.s0 == 0.0f && picked.s1 == 2.0f && picked.s2 == 3.0f && picked.s3 == 0.0f);
    float data[32];
    for (int i = 0; i < 32; ++i) data[i] = (float)i;
    const float8 evens = vload16(0, data).even, odds = vload16(1, data).odd;
    CHECK(evens.s0 == 0.0f && evens.s7 == 14.0f && odds.s0 == 17.0f && odds.s7 == 31.0f);
    const float16 joined = (float16)(vload16(0, data).even, vload16(1, data).even);
    CHECK(joined.s7 == 14.0f && joined.s8 == 16.0f && joined.sf == 30.0f);
    CHECK(vload4(2, data).x == 8.0f);                           // offsets count whole vectors
    float out[4] = {0, 0, 0, 0};
    vstore4(fma((float4)(2.0f), vload4(0, data), (float4)(1.0f)), 0, out);
    CHECK(out[0] == 1.0f && out[3] == 7.0f);
    const float4 m = fmax(vload4(0, data) - (float4)(1.5f), (float4)(0.0f)) * 2.0f;
    CHECK(m.s0 == 0.0f && m.s1 == 0.0f && m.s2 == 1.0f && m.s3 == 3.0f);
    const uchar pixels[3] = {10, 200, 255};
    int3 p = convert_int3(vload3(0, pixels)) * 3 + 1;
    p = clamp(p >> 1, 0, 255);
    CHECK(p.x == 15 && p.y == 255 && p.z == 255);
    p = p.zyx;
    CHECK(p.x == 255 && p.z == 15);
    uchar stored[3];
    vstore3(convert_uchar3((int3)(1, 2, 300)), 0, stored);
    CHECK(stored[0] == 1 && stored[2] == (uchar)300);
    CHECK(clamp(7, 0, 5) == 5 && clamp(-1.0f, 0.0f, 1.0f) == 0.0f && select(1.0f, 2.0f, 1) == 2.0f);
    CHECK(-INFINITY < -3.0e38f);
    const float4 e = exp(-(float4)(0.0f, 1.0f, 2.0f, 3.0f));
    CHECK(e.s0 == 1.0f && e.s1 == expf(-1.0f));
    float4 acc = (float4)(1.0f);
    acc += vload4(0, data);
    acc *= 2.0f;
    CHECK(acc.s3 == 8.0f);
    CAT(float, 8) pasted = (CAT(float, 8))(1.0f);
    CHECK(pasted.s7 == 1.0f);
    if (failures == 0) std::printf("ok\n");
    return failures;
}
"""


def test_compat_header_semantics_on_the_host(tmp_path):
    """The header's vector types, swizzles, literals, select/clamp/vload/vstore/convert behave as OpenCL defines
    them, checked on the host (the same __host__ __device__ code the kernels use)."""
    cu = tmp_path / "host_check.cu"
    cu.write_text("#include <cstdio>\n" + compat_header() + cuda_dialect(HOST_CHECK))
    binary = tmp_path / "host_check"
    build = subprocess.run([NVCC, *NVCC_FLAGS, str(cu), "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(binary)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout
