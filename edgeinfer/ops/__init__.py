"""NumPy implementations of every supported op: the reference backend and the CPU fallback.

Each op is a plain function registered under its ONNX name with :func:`register`; one module per
op family (conv, pool, linalg, elementwise, tensor, reduce, detection, quant). An implementation takes the
list of input arrays (``None`` for an omitted optional input) and the node's attribute dict, and
returns the list of output arrays. Semantics are those of ONNX opset 17: the frontend rewrites
older opsets into that form before the op sees them.
"""

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


# Import the op families so that their @register decorators run.
from edgeinfer.ops import (  # noqa: E402,F401
    conv,
    detection,
    elementwise,
    linalg,
    pool,
    quant,
    reduce,
    tensor,
)
