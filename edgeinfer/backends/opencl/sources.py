"""OpenCL program text of a launch: its template's source and its defines as build options.

Templates are ``kernels/opencl/<template>.cl`` with ``common.cl`` (and the helpers the template needs) prepended;
knobs are ``-D`` options.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from edgeinfer.tuned_configs import data_dir

# Helper sources a template needs, placed between common.cl and the template.
TEMPLATE_INCLUDES = {"conv2d": ["window"], "depthwise": ["window"], "pool": ["window"]}


@cache
def template_source(template: str) -> str:
    """``common.cl``, the template's helper sources, then ``<template>.cl``."""
    directory = data_dir("kernels") / "opencl"
    parts = ["common", *TEMPLATE_INCLUDES.get(template, []), template]
    return "\n".join((directory / f"{part}.cl").read_text() for part in parts)


def build_options(defines: dict[str, Any]) -> str:
    return " ".join(f"-D{key}={value}" for key, value in sorted(defines.items()))
