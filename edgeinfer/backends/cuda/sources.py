"""CUDA sources of the kernel templates: the OpenCL templates themselves, compiled as CUDA C++.

A CUDA kernel is its OpenCL kernel, the same text (``kernels/opencl/<template>.cl`` with ``common.cl`` and its
helper sources, as the OpenCL backend assembles it), behind ``kernels/cuda/opencl_compat.cuh``, which spells
OpenCL C's built-ins, vector types and qualifiers in CUDA C++. So a fix or a new knob in a template serves both
APIs, and kernel names, argument order and ``-D`` knobs are the OpenCL ones (docs/cuda.md).

One rewrite a header cannot do is made on the text (:func:`cuda_dialect`): OpenCL's vector literal
``(float4)(0, 1, 2, 3)`` is in C++ a cast of a comma expression (lane 3 everywhere), so literal casts become
constructor calls ``float4(0, 1, 2, 3)``.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from edgeinfer.planning.templates import template_source
from edgeinfer.tuned_configs import data_dir

# A cast to an OpenCL vector type written out (`(float16)(`, `(int4)(`) or pasted (`(CAT(T, 16))(`).
_VECTOR_LITERAL = re.compile(r"\(((?:u?char|u?short|u?int|u?long|float)(?:2|3|4|8|16)|CAT\(\w+, *\d+\))\)\(")
# `__local` on a pointer parameter (softmax.cl group_reduce): NVRTC rejects __shared__ there (nvcc only warns), and
# CUDA pointers are generic, so it is dropped; `__local` declarations in kernel bodies stay (shared memory).
_LOCAL_PARAMETER = re.compile(r"([(,]\s*)__local\s+")

# Floating point as the OpenCL build has it (opencl/runtime.py build_flags): correctly rounded division and
# square root, denormals kept (OpenCL does not flush them unless -cl-denorms-are-zero), a * b + c contracted to
# FMA as OpenCL C allows by default. No fast math; the kernels use no tensor cores, so TF32 never arises.
# Warning 1835: __shared__ on a pointer parameter is ignored (opencl_compat.cuh, __local).
NVRTC_OPTIONS = ("--std=c++17", "--prec-div=true", "--prec-sqrt=true", "--ftz=false", "--fmad=true",
                 "--diag-suppress=1835")  # fmt: skip


def cuda_dialect(opencl_source: str) -> str:
    """``opencl_source`` with its vector literal casts written as constructor calls (module docstring) and no
    ``__local`` on pointer parameters."""
    return _LOCAL_PARAMETER.sub(r"\1", _VECTOR_LITERAL.sub(r"\1(", opencl_source))


@cache
def compat_header() -> str:
    return (data_dir("kernels") / "cuda" / "opencl_compat.cuh").read_text()


@cache
def cuda_template_source(template: str) -> str:
    """``template``'s OpenCL source (common.cl, helpers, template) in CUDA dialect."""
    return cuda_dialect(template_source(template))


def knob_lines(defines: dict[str, Any]) -> str:
    """A launch's knobs as ``#define`` lines. Not ``-D`` options as on OpenCL: those reach the headers NVRTC and
    nvcc include first too, where a knob named ``T`` turns CUDA's ``template <typename T>`` into
    ``template <typename float>``."""
    return "".join(f"#define {key} {value}\n" for key, value in sorted(defines.items()))


def program_source(template: str, defines: dict[str, Any]) -> str:
    """The whole CUDA source of one program: compat header, knobs, the template in CUDA dialect."""
    return f"{compat_header()}\n{knob_lines(defines)}{cuda_template_source(template)}"
