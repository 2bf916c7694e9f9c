"""Linear (de)quantization: QuantizeLinear and DequantizeLinear, per tensor or per axis (opset 13).

``y = saturate(round_half_to_even(x / scale) + zero_point)`` and ``x = (y - zero_point) * scale``;
the integer dtype is that of the zero point (uint8 when it is omitted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeinfer.ops.registry import register


def _per_axis(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Shape a scale or zero point to broadcast against the data: scalar, or 1-D along ``axis``."""
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


def _zero_point(inputs: list[np.ndarray | None]) -> np.ndarray | None:
    return inputs[2] if len(inputs) > 2 and inputs[2] is not None else None


@register("QuantizeLinear")
def quantize_linear(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    zp = _zero_point(inputs)
    axis = int(attrs.get("axis", 1))
    out_dtype = np.dtype(np.uint8) if zp is None else zp.dtype
    info = np.iinfo(out_dtype)
    q = np.rint(x / _per_axis(scale, x.ndim, axis).astype(x.dtype, copy=False))
    if zp is not None:
        q += _per_axis(zp, x.ndim, axis).astype(q.dtype)
    return [np.clip(q, info.min, info.max).astype(out_dtype)]


@register("DequantizeLinear")
def dequantize_linear(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    zp = _zero_point(inputs)
    axis = int(attrs.get("axis", 1))
    y = x.astype(np.int32) if zp is None else x.astype(np.int32) - _per_axis(zp, x.ndim, axis).astype(np.int32)
    return [y.astype(scale.dtype) * _per_axis(scale, x.ndim, axis)]
