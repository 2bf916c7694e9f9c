"""Activation functions shared by the fused Conv and the element-wise ops.

The fusion pass folds an activation into the node that produces its input (``Conv`` attributes
``activation`` / ``activation_params``); this module implements each activation once so that the fused
and the stand-alone forms give identical results. Every function can work in place (``out=x``), which
is what the fused Conv does to avoid a temporary the size of its output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ACTIVATIONS = ("relu", "leaky_relu", "clip", "sigmoid", "hard_sigmoid", "hard_swish", "silu", "tanh")


def _param(params: Sequence[float] | None, i: int, default: float) -> float:
    return float(params[i]) if params is not None and len(params) > i else default


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in ``out``; exp overflows to inf for very negative x, which gives the right 0."""
    with np.errstate(over="ignore"):
        np.negative(x, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _hard_sigmoid(x: np.ndarray, alpha: float, beta: float, out: np.ndarray) -> np.ndarray:
    """``max(0, min(1, alpha * x + beta))`` in ``out``."""
    np.multiply(x, alpha, out=out)
    out += beta
    return np.clip(out, 0, 1, out=out)


def apply_activation(
    x: np.ndarray, name: str, params: Sequence[float] | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Return ``name(x)`` written into ``out`` (a new array when ``None``; ``out=x`` works in place).

    ``params`` are the fused-Conv ``activation_params``: ``leaky_relu`` [alpha=0.01], ``clip`` [min, max]
    (default -inf, inf), ``hard_sigmoid`` [alpha=0.2, beta=0.5]; the others take none. The dtype of ``x``
    is kept (Python-float parameters do not promote float32).
    """
    if out is None:
        out = np.empty_like(x)
    if name == "relu":
        return np.maximum(x, 0, out=out)
    if name == "clip":
        return np.clip(x, _param(params, 0, -np.inf), _param(params, 1, np.inf), out=out)
    if name == "leaky_relu":
        if out is not x:
            np.copyto(out, x)
        return np.multiply(out, _param(params, 0, 0.01), out=out, where=out < 0)
    if name == "sigmoid":
        return _sigmoid(x, out)
    if name == "tanh":
        return np.tanh(x, out=out)
    if name == "hard_sigmoid":
        return _hard_sigmoid(x, _param(params, 0, 0.2), _param(params, 1, 0.5), out)
    if name == "hard_swish":
        gate = _hard_sigmoid(x, 1 / 6, 0.5, np.empty_like(x))
        return np.multiply(x, gate, out=out)
    if name == "silu":  # x / (1 + exp(-x)): one pass fewer than x * sigmoid(x)
        denominator = np.empty_like(x)
        with np.errstate(over="ignore"):
            np.negative(x, out=denominator)
            np.exp(denominator, out=denominator)
        denominator += 1
        return np.divide(x, denominator, out=out)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
