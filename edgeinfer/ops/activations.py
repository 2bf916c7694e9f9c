"""Activation functions shared by the fused Conv and the element-wise ops.

The fusion pass folds an activation into the node that produces its input (``Conv`` attributes
``activation`` / ``activation_params``); this module implements each activation once so that the fused
and the stand-alone forms give identical results. Every function can work in place (``out=x``), which
is what the fused Conv does to avoid a temporary the size of its output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgeinfer.activations import FUSED, param_defaults


def _param(params: Sequence[float] | None, i: int, default: float) -> float:
    return float(params[i]) if params is not None and len(params) > i else default


def _params(name: str, params: Sequence[float] | None) -> list[float]:
    """``name``'s parameters: those given, the table's defaults for the rest."""
    return [_param(params, i, default) for i, default in enumerate(param_defaults(name))]


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


def _leaky_relu(x: np.ndarray, alpha: float, out: np.ndarray) -> np.ndarray:
    if out is not x:
        np.copyto(out, x)
    return np.multiply(out, alpha, out=out, where=out < 0)


def _hard_swish(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    gate = _hard_sigmoid(x, 1 / 6, 0.5, np.empty_like(x))
    return np.multiply(x, gate, out=out)


def _silu(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))``: one pass fewer than ``x * sigmoid(x)``."""
    denominator = np.empty_like(x)
    with np.errstate(over="ignore"):
        np.negative(x, out=denominator)
        np.exp(denominator, out=denominator)
    denominator += 1
    return np.divide(x, denominator, out=out)


# The NumPy form of each fused activation (edgeinfer/activations.py FUSED): fn(x, parameters, out) -> out.
IMPLEMENTATIONS: dict[str, Callable[[np.ndarray, list[float], np.ndarray], np.ndarray]] = {
    "relu": lambda x, p, out: np.maximum(x, 0, out=out),
    "leaky_relu": lambda x, p, out: _leaky_relu(x, p[0], out),
    "clip": lambda x, p, out: np.clip(x, p[0], p[1], out=out),
    "sigmoid": lambda x, p, out: _sigmoid(x, out),
    "hard_sigmoid": lambda x, p, out: _hard_sigmoid(x, p[0], p[1], out),
    "hard_swish": lambda x, p, out: _hard_swish(x, out),
    "silu": lambda x, p, out: _silu(x, out),
    "tanh": lambda x, p, out: np.tanh(x, out=out),
}


def apply_activation(
    x: np.ndarray, name: str, params: Sequence[float] | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Return ``name(x)`` written into ``out`` (a new array when ``None``; ``out=x`` works in place).

    ``params`` are the fused-Conv ``activation_params``: ``leaky_relu`` [alpha=0.01], ``clip`` [min, max]
    (default -inf, inf), ``hard_sigmoid`` [alpha=0.2, beta=0.5]; the others take none. The dtype of ``x``
    is kept (Python-float parameters do not promote float32).
    """
    implementation = IMPLEMENTATIONS.get(name)
    if implementation is None:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(FUSED)}")
    return implementation(x, _params(name, params), np.empty_like(x) if out is None else out)
