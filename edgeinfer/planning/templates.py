"""The kernel template texts that every GPU API compiles: ``kernels/opencl/<template>.cl`` with ``common.cl`` and
the helpers the template needs prepended. OpenCL builds them as they are (knobs as ``-D`` options,
backends/opencl/sources.py); CUDA compiles the same text behind ``kernels/cuda/opencl_compat.cuh``
(backends/cuda/sources.py)."""

from __future__ import annotations

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
