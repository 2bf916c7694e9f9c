"""The OpenCL program of a launch: its text and its knobs as build options (template texts:
edgeinfer/planning/templates.py)."""

from __future__ import annotations

from typing import Any

import pyopencl as cl

from edgeinfer.backends.opencl.program_cache import driver_keeps_builds
from edgeinfer.planning.plan import Launch
from edgeinfer.planning.templates import kernel_source, template_source


def build_options(defines: dict[str, Any]) -> str:
    return " ".join(f"-D{key}={value}" for key, value in sorted(defines.items()))


def program_text(launch: Launch, device: cl.Device) -> str:
    """The whole template where the driver compiles kernels only when enqueued; on PoCL, whose program binaries
    cost a compile of every kernel in the program, only the launch's kernel (program_cache, docs/program-cache.md)."""
    if driver_keeps_builds(device):
        return kernel_source(launch.template, launch.kernel)
    return template_source(launch.template)
