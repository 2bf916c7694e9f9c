"""The op registry: each NumPy op implementation registers under its ONNX name (``@register``); the op family
modules import this module, and ``edgeinfer.ops`` imports the families, so no module imports the package back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

OpFn = Callable[[list[np.ndarray | None], dict[str, Any]], list[np.ndarray]]


@dataclass(frozen=True)
class OpSpec:
    name: str
    fn: OpFn
    # Data-dependent or sort-heavy ops (NMS, TopK) that the placement pass keeps on the CPU.
    cpu_only: bool = False
    # Output shape depends on input values, not only on input shapes.
    dynamic_shape: bool = False


OPS: dict[str, OpSpec] = {}


def register(*names: str, cpu_only: bool = False, dynamic_shape: bool = False) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` as the NumPy implementation of the ONNX ops ``names``."""

    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            if name in OPS:
                raise RuntimeError(f"op {name} registered twice")
            OPS[name] = OpSpec(name, fn, cpu_only=cpu_only, dynamic_shape=dynamic_shape)
        return fn

    return wrap


def get_op(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError:
        raise NotImplementedError(f"op {name} has no NumPy implementation") from None
