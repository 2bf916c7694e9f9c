"""Shape and data-movement ops: reshapes, slicing, gathering, padding, Resize and shape arithmetic.

Shape-like operands (Reshape ``shape``, Slice ``starts``, Pad ``pads``, Resize ``scales``, ...) are
int64/float inputs, as in ONNX opset 17; they are usually constants of the graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeinfer.ops.registry import register


def _ints(x: np.ndarray | None) -> list[int]:
    return [] if x is None else [int(v) for v in np.asarray(x).reshape(-1)]


def _input(inputs: list[np.ndarray | None], i: int) -> np.ndarray | None:
    """Optional input ``i`` (absent when the list is shorter, ``None`` or empty)."""
    x = inputs[i] if len(inputs) > i else None
    return None if x is None or x.size == 0 else x


@register("Flatten")
def flatten(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Reshape to 2-D ``[prod(shape[:axis]), prod(shape[axis:])]``."""
    x = inputs[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


def reshape_target(in_shape: tuple[int, ...], shape: list[int], allowzero: int = 0) -> tuple[int, ...]:
    """Resolve ONNX Reshape's ``0`` (copy the input dim unless ``allowzero``) and ``-1`` (infer) entries."""
    out = [in_shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(in_shape) // known if known else 0
    return tuple(out)


@register("Reshape")
def reshape(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    return [x.reshape(reshape_target(x.shape, _ints(inputs[1]), int(attrs.get("allowzero", 0))))]


@register("Transpose")
def transpose(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Permute axes (default: reverse them); the result is made contiguous for the next kernel."""
    perm = attrs.get("perm")
    return [np.ascontiguousarray(np.transpose(inputs[0], None if perm is None else [int(p) for p in perm]))]


@register("Squeeze")
def squeeze(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Drop the given size-1 axes, or every size-1 axis when ``axes`` is omitted."""
    x = inputs[0]
    axes = _input(inputs, 1)
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in _ints(axes)))]


@register("Unsqueeze")
def unsqueeze(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Insert size-1 axes at the given positions of the output (negative: counted from its end)."""
    x = inputs[0]
    axes = _ints(inputs[1])
    rank = x.ndim + len(axes)
    new_axes = sorted(a % rank for a in axes)
    shape = list(x.shape)
    for a in new_axes:
        shape.insert(a, 1)
    return [x.reshape(shape)]


@register("Concat")
def concat(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """ONNX Concat."""
    xs = [x for x in inputs if x is not None]
    return [np.concatenate(xs, axis=int(attrs["axis"]) % xs[0].ndim)]


@register("Split")
def split(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Split along ``axis`` into the sizes of the ``split`` input, else into ``num_outputs`` equal parts.

    An op sees no output count, so for an equal split the frontend records the node's number of
    outputs in ``num_outputs`` (the opset-18 attribute of the same meaning); the last part may be
    smaller, as in opset 18.
    """
    x = inputs[0]
    axis = int(attrs.get("axis", 0)) % x.ndim
    sizes = _input(inputs, 1)
    if sizes is not None:
        bounds = np.cumsum(_ints(sizes))[:-1]
    else:
        if "num_outputs" not in attrs:
            raise ValueError("Split without a 'split' input needs the 'num_outputs' attribute (number of outputs)")
        part = -(-x.shape[axis] // int(attrs["num_outputs"]))
        bounds = np.arange(part, x.shape[axis], part)
    return list(np.split(x, bounds, axis=axis))


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping of one axis' ``start``/``end`` (negative counts from the end) as a Python slice."""
    if step == 0:
        raise ValueError("Slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@register("Slice")
def slice_(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(_input(inputs, 3)) or list(range(len(starts)))
    steps = _ints(_input(inputs, 4)) or [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % x.ndim] = _slice_bounds(start, end, step, x.shape[axis % x.ndim])
    return [x[tuple(index)].copy()]


@register("Gather")
def gather(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """``np.take`` along ``axis``; negative indices count from the end, as in ONNX."""
    return [np.take(inputs[0], inputs[1].astype(np.int64, copy=False), axis=int(attrs.get("axis", 0)))]


@register("Pad")
def pad(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Pad in ``constant``/``reflect``/``edge`` mode; negative pads crop, optional ``axes`` (opset 18)."""
    x = inputs[0]
    pads = _ints(inputs[1])
    value = _input(inputs, 2)
    axes = [a % x.ndim for a in _ints(_input(inputs, 3))] or list(range(x.ndim))
    mode = attrs.get("mode", "constant")
    before, after = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[i + len(axes)]
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for b, e, d in zip(before, after, x.shape))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
    if mode == "constant":
        fill = 0 if value is None else value.reshape(-1)[0]
        return [np.pad(x, width, mode="constant", constant_values=fill)]
    if mode in ("reflect", "edge"):
        return [np.pad(x, width, mode=mode)]
    raise ValueError(f"Pad mode {mode!r} is not supported; expected constant, reflect or edge")


# --- Resize -------------------------------------------------------------------------------------


def _source_coords(mode: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Map output positions of one axis to input coordinates (``coordinate_transformation_mode``)."""
    # float32 coordinates, as onnxruntime computes them: in float64, y / 0.6f lands just below
    # an integer where float32 gives the integer, and nearest then picks a different pixel.
    y = np.arange(out_len, dtype=np.float32)
    scale = np.float32(scale)
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if out_len > 1 else np.zeros(out_len, np.float32)  # ONNX: 0 for length 1
    if mode == "align_corners":
        return y * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros(out_len)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_len > 1:
            return start * (in_len - 1) + y * (end - start) * (in_len - 1) / (out_len - 1)
        return np.full(out_len, (start + end) * (in_len - 1) / 2)
    raise ValueError(f"Resize coordinate_transformation_mode {mode!r} is not supported")


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution weights of the 4 neighbours at offsets -1, 0, 1, 2 for fractions ``t``."""
    d = np.stack([t + 1, t, 1 - t, 2 - t], axis=-1)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def _axis_taps(x: np.ndarray, in_len: int, attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour indices (clamped) and weights ``[out_len, taps]`` of one axis for linear/cubic/nearest."""
    mode = attrs.get("mode", "nearest")
    base = np.floor(x)
    frac = x - base
    base = base.astype(np.int64)
    if mode == "nearest":
        nearest = attrs.get("nearest_mode", "round_prefer_floor")
        up = {
            "round_prefer_floor": frac > 0.5,
            "round_prefer_ceil": frac >= 0.5,
            "floor": np.zeros(frac.shape, bool),
            "ceil": frac > 0,
        }[nearest]
        return np.clip(base + up, 0, in_len - 1)[:, None], np.ones((len(x), 1))
    if mode == "linear":
        idx = base[:, None] + np.arange(2)
        weights = np.stack([1 - frac, frac], axis=-1)
    elif mode == "cubic":
        idx = base[:, None] + np.arange(-1, 3)
        weights = _cubic_weights(frac, float(attrs.get("cubic_coeff_a", -0.75)))
    else:
        raise ValueError(f"Resize mode {mode!r} is not supported; expected nearest, linear or cubic")
    if int(attrs.get("exclude_outside", 0)):
        weights = np.where((idx < 0) | (idx >= in_len), 0.0, weights)
        weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_len - 1), weights


def _resize_axis(
    data: np.ndarray, axis: int, out_len: int, scale: float, roi: tuple[float, float], attrs: dict[str, Any]
) -> np.ndarray:
    """Resample one axis (Resize is separable): gather the taps, weight them, and extrapolate outside the ROI."""
    in_len = data.shape[axis]
    coord_mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    x = _source_coords(coord_mode, out_len, in_len, scale, roi)
    idx, weights = _axis_taps(x, in_len, attrs)
    shape = [1] * data.ndim
    shape[axis] = out_len
    out = None
    for tap in range(idx.shape[1]):
        part = np.take(data, idx[:, tap], axis=axis)
        if weights.shape[1] > 1:
            part = part * weights[:, tap].astype(data.dtype).reshape(shape)
        out = part if out is None else out + part
    if coord_mode == "tf_crop_and_resize":
        outside = ((x < 0) | (x > in_len - 1)).reshape(shape)
        out = np.where(outside, data.dtype.type(attrs.get("extrapolation_value", 0.0)), out)
    return out


@register("Resize")
def resize(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Resize (opset 11-17): nearest/linear/cubic, every coordinate transformation mode, one axis at a time.

    Integer tensors are interpolated in float32 and rounded back. ``antialias``, ``axes`` and
    ``keep_aspect_ratio_policy`` (opset 18+) are not supported.
    """
    x = inputs[0]
    roi, scales, sizes = _input(inputs, 1), _input(inputs, 2), _input(inputs, 3)
    if sizes is not None:
        out_shape = _ints(sizes)
        scale_list = [o / i for o, i in zip(out_shape, x.shape)]
    elif scales is not None:
        scale_list = [float(s) for s in scales.astype(np.float32)]
        out_shape = [int(math.floor(s * d)) for s, d in zip(scales.astype(np.float64), x.shape)]
    else:
        raise ValueError("Resize needs either 'scales' or 'sizes'")
    roi_list = [float(r) for r in roi.reshape(-1)] if roi is not None else [0.0] * x.ndim + [1.0] * x.ndim
    integer = x.dtype.kind in "iu"
    y = x.astype(np.float32) if integer else x
    cropping = attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize"
    for axis in range(x.ndim):
        axis_roi = (roi_list[axis], roi_list[axis + x.ndim])
        if out_shape[axis] == x.shape[axis] and scale_list[axis] == 1 and (not cropping or axis_roi == (0.0, 1.0)):
            continue
        y = _resize_axis(y, axis, out_shape[axis], scale_list[axis], axis_roi, attrs)
    if integer:
        info = np.iinfo(x.dtype)
        return [np.clip(np.rint(y), info.min, info.max).astype(x.dtype)]
    return [y if y is not x else x.copy()]


# --- shape arithmetic and constants ----------------------------------------------------------


@register("Shape")
def shape(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """The input's shape as int64, sliced by ``start``/``end`` (opset 15, clamped like Python slicing)."""
    dims = inputs[0].shape
    end = attrs.get("end")
    return [np.array(dims[int(attrs.get("start", 0)) : None if end is None else int(end)], dtype=np.int64)]


@register("Range")
def range_(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """``start + i * delta`` for ``i < max(ceil((limit - start) / delta), 0)``, in the dtype of ``start``."""
    start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in inputs[:3])
    count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    return [(start + np.arange(count, dtype=start.dtype) * delta).astype(start.dtype)]


@register("Expand")
def expand(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Broadcast to ``shape`` (bidirectionally: a 1 in ``shape`` keeps the input's dim)."""
    x = inputs[0]
    target = np.broadcast_shapes(x.shape, tuple(_ints(inputs[1])))
    return [np.broadcast_to(x, target).copy()]


@register("ConstantOfShape")
def constant_of_shape(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    value = attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return [np.full(_ints(inputs[0]), value.reshape(-1)[0], dtype=value.dtype)]


@register("Constant")
def constant(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """The ``value`` tensor, or one of the scalar/list forms (``value_float``, ``value_ints``, ...)."""
    if "value" in attrs:
        return [np.array(attrs["value"])]
    for key, dtype in [
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ]:
        if key in attrs:
            return [np.array(attrs[key], dtype=dtype)]
    raise ValueError(f"Constant has no supported value attribute (got {sorted(attrs)})")


@register("Tile")
def tile(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.tile(inputs[0], _ints(inputs[1]))]


@register("DepthToSpace")
def depth_to_space(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Move ``blocksize``x``blocksize`` blocks of channels into space; ``DCR`` (default) or ``CRD`` order."""
    x = inputs[0]
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [np.ascontiguousarray(y).reshape(n, c // (b * b), h * b, w * b)]


@register("SpaceToDepth")
def space_to_depth(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """Inverse of DepthToSpace in DCR order: ``blocksize``x``blocksize`` spatial blocks become channels."""
    x = inputs[0]
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return [np.ascontiguousarray(y).reshape(n, c * b * b, h // b, w // b)]
