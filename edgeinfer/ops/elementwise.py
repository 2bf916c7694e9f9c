"""Element-wise ops: activations, arithmetic with broadcasting, comparisons, Cast and Softmax.

The activations share ops/activations.py with the fused Conv, so both forms give identical results.

Every op keeps the dtype of its (first) input, as ONNX does: a float32 model stays float32 even where
NumPy would promote (float32 ** int64, float32 * float64 attribute scalar).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeinfer.ops.activations import apply_activation
from edgeinfer.ops.registry import register

# ONNX TensorProto.DataType enum -> numpy dtype, for Cast (the runtime must not import onnx).
ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
}


def _scalar(x: np.ndarray | None) -> Any:
    return None if x is None or x.size == 0 else x.reshape(-1)[0]


@register("Relu")
def relu(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [apply_activation(inputs[0], "relu", [])]


@register("LeakyRelu")
def leaky_relu(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [apply_activation(inputs[0], "leaky_relu", [float(attrs.get("alpha", 0.01))])]


@register("PRelu")
def prelu(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """``x`` where positive, ``slope * x`` elsewhere; ``slope`` broadcasts to ``x`` (unidirectionally)."""
    x, slope = inputs[0], inputs[1]
    return [np.where(x < 0, x * slope.astype(x.dtype, copy=False), x)]


@register("Clip")
def clip(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Clip with optional ``min``/``max`` inputs (opset >= 11); integer tensors stay integer."""
    x = inputs[0]
    lo = _scalar(inputs[1] if len(inputs) > 1 else None)
    hi = _scalar(inputs[2] if len(inputs) > 2 else None)
    if x.dtype.kind == "f":
        lo = -np.inf if lo is None else float(lo)
        hi = np.inf if hi is None else float(hi)
        return [apply_activation(x, "clip", [lo, hi])]
    y = x
    if lo is not None:
        y = np.maximum(y, x.dtype.type(lo))
    if hi is not None:
        y = np.minimum(y, x.dtype.type(hi))
    return [y if y is not x else x.copy()]


@register("Sigmoid")
def sigmoid(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [apply_activation(inputs[0], "sigmoid", [])]


@register("HardSigmoid")
def hard_sigmoid(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    params = [float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))]
    return [apply_activation(inputs[0], "hard_sigmoid", params)]


@register("HardSwish")
def hard_swish(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [apply_activation(inputs[0], "hard_swish", [])]


@register("Tanh")
def tanh(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [apply_activation(inputs[0], "tanh", [])]


def _unary(name: str, fn: np.ufunc) -> None:
    def op(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        # log(0) = -inf and sqrt(-1) = nan are ONNX's answers, not errors worth a warning.
        with np.errstate(divide="ignore", invalid="ignore"):
            return [fn(inputs[0])]

    op.__name__ = op.__qualname__ = name.lower()
    op.__doc__ = f"ONNX {name}: numpy.{fn.__name__}, which keeps the input dtype."
    register(name)(op)


for _name, _fn in [
    ("Exp", np.exp),
    ("Log", np.log),
    ("Sqrt", np.sqrt),
    ("Neg", np.negative),
    ("Abs", np.abs),
    ("Floor", np.floor),
    ("Ceil", np.ceil),
]:
    _unary(_name, _fn)


def _binary(name: str, fn: np.ufunc) -> None:
    def op(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        return [fn(inputs[0], inputs[1])]

    op.__name__ = op.__qualname__ = name.lower()
    op.__doc__ = f"ONNX {name}: numpy.{fn.__name__} with multidirectional broadcasting."
    register(name)(op)


for _name, _fn in [
    ("Add", np.add),
    ("Sub", np.subtract),
    ("Mul", np.multiply),
    ("Equal", np.equal),
    ("Greater", np.greater),
    ("Less", np.less),
]:
    _binary(_name, _fn)


@register("Div")
def div(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Division; integer division truncates toward zero like C (NumPy's ``//`` floors)."""
    a, b = inputs[0], inputs[1]
    if a.dtype.kind not in "iu":
        return [np.divide(a, b)]
    q = np.floor_divide(a, b)
    if a.dtype.kind == "i":
        q += ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0))).astype(q.dtype)
    return [q]


@register("Pow")
def power(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """``x ** y`` with the dtype of ``x`` whatever the dtype of the exponent (ONNX's rule)."""
    x, y = inputs[0], inputs[1]
    if x.dtype.kind == "f":
        return [np.power(x, y.astype(x.dtype, copy=False))]
    if y.dtype.kind == "f":
        return [np.power(x.astype(np.float64), y).astype(x.dtype)]
    return [np.power(x, y.astype(x.dtype, copy=False))]


@register("Max")
def maximum(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Variadic element-wise maximum with broadcasting."""
    y = inputs[0]
    for x in inputs[1:]:
        y = np.maximum(y, x)
    return [y if len(inputs) > 1 else y.copy()]


@register("Min")
def minimum(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Variadic element-wise minimum with broadcasting."""
    y = inputs[0]
    for x in inputs[1:]:
        y = np.minimum(y, x)
    return [y if len(inputs) > 1 else y.copy()]


@register("Where")
def where(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.where(inputs[0], inputs[1], inputs[2])]


@register("Cast")
def cast(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Cast to the ONNX dtype ``to``; float to int truncates toward zero, as in C."""
    to = int(attrs["to"])
    if to not in ONNX_DTYPES:
        raise NotImplementedError(f"Cast to ONNX dtype {to} is not supported; expected one of {sorted(ONNX_DTYPES)}")
    return [inputs[0].astype(ONNX_DTYPES[to])]


@register("Identity")
def identity(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [inputs[0]]


@register("Dropout")
def dropout(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Inference Dropout: the identity, and an all-true mask (a free broadcast view) for the optional output."""
    training = len(inputs) > 2 and inputs[2] is not None and bool(_scalar(inputs[2]))
    ratio = float(_scalar(inputs[1])) if len(inputs) > 1 and inputs[1] is not None else 0.5
    if training and ratio != 0.0:  # training with ratio 0 drops nothing: still the identity
        raise NotImplementedError("Dropout with training_mode=True is not supported (inference runtime)")
    x = inputs[0]
    return [x, np.broadcast_to(np.True_, x.shape)]


@register("Softmax")
def softmax(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Softmax along one axis (opset-13 semantics, default -1)."""
    axis = int(attrs.get("axis", -1))
    e = np.exp(inputs[0] - np.max(inputs[0], axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return [e]


@register("LogSoftmax")
def log_softmax(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """LogSoftmax along one axis (opset-13 semantics, default -1)."""
    axis = int(attrs.get("axis", -1))
    shifted = inputs[0] - np.max(inputs[0], axis=axis, keepdims=True)
    return [shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))]
