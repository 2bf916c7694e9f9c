"""The kernel template texts that every GPU API compiles: ``kernels/opencl/<template>.cl`` with ``common.cl`` and
the helpers the template needs prepended. OpenCL builds them as they are (knobs as ``-D`` options,
backends/opencl/sources.py); CUDA compiles the same text behind ``kernels/cuda/opencl_compat.cuh``
(backends/cuda/sources.py)."""

from __future__ import annotations

import re
from functools import cache

from edgeinfer.tuned_configs import data_dir

# Helper sources a template needs, placed between common.cl and the template.
TEMPLATE_INCLUDES = {"conv2d": ["window"], "depthwise": ["window"], "pool": ["window"]}


@cache
def template_source(template: str) -> str:
    """``common.cl``, the template's helper sources, then ``<template>.cl``."""
    directory = data_dir("kernels") / "opencl"
    parts = ["common", *TEMPLATE_INCLUDES.get(template, []), template]
    return "\n".join((directory / f"{part}.cl").read_text() for part in parts)


_KERNEL = re.compile(r"__kernel\s+void\s+(\w+)\s*\(")


@cache
def kernel_source(template: str, kernel: str) -> str:
    """``template_source`` with every other kernel's definition cut out (helpers and macros stay): a program of one
    kernel. A driver that compiles each kernel of a program when asked for its binary (PoCL) then compiles one."""
    source = template_source(template)
    parts, start = [], 0
    for match in _KERNEL.finditer(source):
        if match.start() < start:
            continue
        end = _body_end(source, source.index("{", match.end()))
        parts.append(source[start : match.start()])
        if match.group(1) == kernel:
            parts.append(source[match.start() : end])
        start = end
    parts.append(source[start:])
    return "".join(parts)


def _body_end(source: str, opening: int) -> int:
    """The index just past the brace that closes the one at ``opening`` (the templates have no braces in comments)."""
    depth = 0
    for index in range(opening, len(source)):
        depth += {"{": 1, "}": -1}.get(source[index], 0)
        if depth == 0:
            return index + 1
    raise ValueError(f"unbalanced braces after offset {opening}")
