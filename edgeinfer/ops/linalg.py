"""Gemm and MatMul: thin wrappers over NumPy's BLAS-backed matmul that keep the input dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeinfer.ops.registry import register


@register("Gemm")
def gemm(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """``alpha * A' @ B' + beta * C`` with optional transposes and a C that broadcasts to the result."""
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = np.matmul(a, b.astype(a.dtype, copy=False))
    if alpha != 1.0:
        y *= alpha
    if c is not None and beta != 0.0:
        c = c.astype(y.dtype, copy=False)
        if beta == 1.0:
            y += c
        else:
            y += beta * c
    return [y]


@register("MatMul")
def matmul(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """NumPy matmul semantics (1-D operands, broadcast batch dimensions), as ONNX MatMul specifies."""
    a, b = inputs[0], inputs[1]
    return [np.matmul(a, b.astype(a.dtype, copy=False))]
