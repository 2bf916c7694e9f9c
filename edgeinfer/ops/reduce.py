"""Reductions (ReduceMean/Max/Sum) and ArgMax.

``axes`` is an attribute of ReduceMean/ReduceMax up to opset 17 but an input of ReduceSum from opset
13 (and of every reduction from opset 18); each reduction accepts both forms, input first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeinfer.ops.registry import register


def _axes(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[int] | None:
    """The reduction axes from the 2nd input, else the ``axes`` attribute; ``None`` when not given."""
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in inputs[1].reshape(-1)]
    axes = attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _reduce(inputs: list[np.ndarray | None], attrs: dict[str, Any], fn: Any, **kwargs: Any) -> np.ndarray:
    """Apply ``fn(x, axis, keepdims)``; empty axes mean all axes, or the identity with ``noop_with_empty_axes``."""
    x = inputs[0]
    axes = _axes(inputs, attrs)
    if not axes:
        if int(attrs.get("noop_with_empty_axes", 0)):
            return x
        axes = list(range(x.ndim))
    axis = tuple(a % x.ndim for a in axes)
    return fn(x, axis=axis, keepdims=bool(attrs.get("keepdims", 1)), **kwargs)


@register("ReduceSum")
def reduce_sum(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(_reduce(inputs, attrs, np.sum, dtype=inputs[0].dtype))]


@register("ReduceMean")
def reduce_mean(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Mean in the input dtype (an empty reduction gives NaN, as in ONNX)."""
    x = inputs[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        if x.dtype.kind == "f":
            return [np.asarray(_reduce(inputs, attrs, np.mean, dtype=x.dtype))]
        return [np.asarray(_reduce(inputs, attrs, np.mean)).astype(x.dtype)]


@register("ReduceMax")
def reduce_max(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Max; reducing an empty axis gives the dtype's lowest value (-inf for floats), as in ONNX."""
    x = inputs[0]
    if x.dtype.kind == "f":
        lowest = -np.inf
    elif x.dtype.kind == "b":
        lowest = False
    else:
        lowest = np.iinfo(x.dtype).min
    return [np.asarray(_reduce(inputs, attrs, np.max, initial=lowest))]


@register("ArgMax")
def arg_max(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Index (int64) of the maximum along ``axis``: the first one, or the last with ``select_last_index``."""
    x = inputs[0]
    axis = int(attrs.get("axis", 0)) % x.ndim
    keepdims = bool(attrs.get("keepdims", 1))
    if int(attrs.get("select_last_index", 0)):
        idx = x.shape[axis] - 1 - np.argmax(np.flip(x, axis=axis), axis=axis, keepdims=keepdims)
    else:
        idx = np.argmax(x, axis=axis, keepdims=keepdims)
    return [idx.astype(np.int64)]
