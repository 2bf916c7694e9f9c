"""Checks of the shape and data-movement ops (ONNX opset 17 forms).

Shape-like operands (Reshape ``shape``, Slice ``starts``, Pad ``pads``, Resize ``sizes``, ...) are read
from the graph's constants when they are constants, and the output shape is then computed exactly;
when they are computed at run time only what the inputs' shapes fix is checked.
"""

from __future__ import annotations

import math

from edgeinfer.ops.tensor import _slice_bounds, reshape_target
from edgeinfer.validation.context import NodeCheck, Shape, bounded, broadcast, rule
from edgeinfer.validation.header import MAX_DIM


def _same_size(c: NodeCheck, out: Shape) -> list:
    if math.prod(out) != math.prod(c.shape(0)):
        c.fail("output shape", f"{math.prod(c.shape(0))} elements like the input {list(c.shape(0))}", list(out))
    return [(out, c.dtype(0))]


@rule("Flatten", attrs="axis")
def flatten(c: NodeCheck) -> list:
    x = c.shape(0)
    axis = c.axis("axis", 1, len(x), extra=1) if x else 0
    return [((math.prod(x[:axis]), math.prod(x[axis:])), c.dtype(0))]


@rule("Reshape", inputs=(2, 2), attrs="allowzero")
def reshape(c: NodeCheck) -> list:
    allowzero = c.flag("allowzero")
    target = c.const_ints(1, "input 1 (shape)")
    if target is None:
        return [None]
    x = c.shape(0)
    copied = [i for i, d in enumerate(target) if d == 0 and not allowzero]
    if target.count(-1) > 1 or any(d < -1 for d in target) or any(i >= len(x) for i in copied):
        c.fail("input 1 (shape)", "dims >= 0 with at most one -1 (a 0 copies the input dim)", target)
    out = reshape_target(x, target, allowzero)
    return _same_size(c, bounded(c, out, "output shape"))


@rule("Transpose", attrs="perm")
def transpose(c: NodeCheck) -> list:
    x = c.shape(0)
    perm = c.ints("perm", list(range(len(x)))[::-1], len(x), 0, max(len(x) - 1, 0))
    if sorted(perm) != list(range(len(x))):
        c.fail("attribute 'perm'", f"a permutation of 0..{len(x) - 1}", perm)
    return [(tuple(x[p] for p in perm), c.dtype(0))]


@rule("Squeeze", inputs=(1, 2))
def squeeze(c: NodeCheck) -> list:
    x = c.shape(0)
    axes = c.const_ints(1, "input 1 (axes)") if c.has(1) else []
    if axes is None:
        return [None]
    if any(not -len(x) <= a < len(x) for a in axes) or len({a % len(x) for a in axes}) != len(axes):
        c.fail("input 1 (axes)", f"distinct axes in [-{len(x)}, {len(x) - 1}]", axes)
    drop = {a % len(x) for a in axes} if axes else {i for i, d in enumerate(x) if d == 1}
    if any(x[a] != 1 for a in drop):
        c.fail("input 1 (axes)", f"axes of size 1 in {list(x)}", axes)
    return [(tuple(d for i, d in enumerate(x) if i not in drop), c.dtype(0))]


@rule("Unsqueeze", inputs=(2, 2))
def unsqueeze(c: NodeCheck) -> list:
    x = c.shape(0)
    axes = c.const_ints(1, "input 1 (axes)")
    if axes is None:
        return [None]
    rank = len(x) + len(axes)
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        c.fail("input 1 (axes)", f"distinct axes in [-{rank}, {rank - 1}]", axes)
    out = list(x)
    for a in sorted(a % rank for a in axes):
        out.insert(a, 1)
    return [(tuple(out), c.dtype(0))]


@rule("Concat", inputs=(1, 2**31), attrs="axis")
def concat(c: NodeCheck) -> list:
    """All inputs of one rank, equal except along ``axis`` (required)."""
    shapes = [c.shape(i) for i in range(len(c.node.inputs))]
    rank = len(shapes[0])
    axis = c.axis("axis", None, max(rank, 1))
    for s in shapes:
        if len(s) != rank or any(d != e for i, (d, e) in enumerate(zip(s, shapes[0])) if i != axis):
            c.fail("input shapes", f"equal except along axis {axis}", [list(s) for s in shapes])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return [(bounded(c, out, "output shape"), c.dtype(0))]


@rule("Split", inputs=(1, 2), outputs=(1, 2**31), attrs="axis num_outputs")
def split(c: NodeCheck) -> list:
    x = c.need_rank(0, 1)
    axis = c.axis("axis", 0, len(x))
    n = len(c.node.outputs)
    if c.has(1):
        sizes = c.const_ints(1, "input 1 (split)")
        if sizes is None:
            return [None] * n
        if len(sizes) != n or any(s < 0 for s in sizes) or sum(sizes) != x[axis]:
            c.fail("input 1 (split)", f"{n} sizes >= 0 adding up to {x[axis]}", sizes)
    else:
        parts = c.int("num_outputs", None, 1, MAX_DIM)
        if parts != n:
            c.fail("attribute 'num_outputs'", f"the node's {n} outputs", parts)
        part = -(-x[axis] // parts)
        sizes = [min(part, max(x[axis] - i * part, 0)) for i in range(parts)]
        if sum(1 for s in sizes if s > 0) < min(parts, x[axis]) or (x[axis] and sizes[-1] == 0):
            c.fail("attribute 'num_outputs'", f"at most the {x[axis]} entries of axis {axis}", parts)
    return [(tuple(s if i == axis else d for i, d in enumerate(x)), c.dtype(0)) for s in sizes]


@rule("Slice", inputs=(3, 5))
def slice_(c: NodeCheck) -> list:
    x = c.shape(0)
    starts, ends = c.const_ints(1, "input 1 (starts)"), c.const_ints(2, "input 2 (ends)")
    axes = c.const_ints(3, "input 3 (axes)") if c.has(3) else None
    steps = c.const_ints(4, "input 4 (steps)") if c.has(4) else None
    if starts is None or ends is None or (c.has(3) and axes is None) or (c.has(4) and steps is None):
        return [None]
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        c.fail("inputs starts, ends, axes, steps", "of one length", [starts, ends, axes, steps])
    if any(not -len(x) <= a < len(x) for a in axes) or len({a % len(x) for a in axes}) != len(axes):
        c.fail("input 3 (axes)", f"distinct axes in [-{len(x)}, {len(x) - 1}]", axes)
    if 0 in steps:
        c.fail("input 4 (steps)", "non-zero", steps)
    out = list(x)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        out[axis % len(x)] = len(range(x[axis % len(x)])[_slice_bounds(start, end, step, x[axis % len(x)])])
    return [(tuple(out), c.dtype(0))]


@rule("Gather", inputs=(2, 2), attrs="axis")
def gather(c: NodeCheck) -> list:
    x = c.need_rank(0, 1)
    axis = c.axis("axis", 0, len(x))
    c.need_dtype(1, ("int32", "int64"))
    indices = c.value(1)
    if indices is not None and indices.size and not (-x[axis] <= indices.min() and indices.max() < x[axis]):
        c.fail("input 1 (indices)", f"in [-{x[axis]}, {x[axis] - 1}] (axis {axis} of {list(x)})")
    return [((*x[:axis], *c.shape(1), *x[axis + 1 :]), c.dtype(0))]


@rule("Pad", inputs=(2, 4), attrs="mode")
def pad(c: NodeCheck) -> list:
    x = c.shape(0)
    mode = c.str("mode", "constant", ("constant", "reflect", "edge"))
    pads = c.const_ints(1, "input 1 (pads)")
    axes = c.const_ints(3, "input 3 (axes)") if c.has(3) else list(range(len(x)))
    if pads is None or axes is None:
        return [None]
    if any(not -len(x) <= a < len(x) for a in axes) or len(pads) != 2 * len(axes):
        c.fail("input 1 (pads)", f"{2 * len(axes)} values (begins, then ends of axes {axes})", pads)
    out = list(x)
    for i, a in enumerate(axes):
        a %= len(x)
        before, after = pads[i], pads[i + len(axes)]
        out[a] = x[a] + before + after
        reflect_too_far = mode == "reflect" and max(before, after) >= max(x[a], 1)
        if out[a] < 0 or reflect_too_far or (mode != "constant" and x[a] == 0 and out[a]):
            c.fail("input 1 (pads)", f"pads that {mode!r} mode can apply to axis {a} of size {x[a]}", pads)
    return [(bounded(c, out, "output shape"), c.dtype(0))]


_RESIZE = "mode coordinate_transformation_mode nearest_mode cubic_coeff_a exclude_outside extrapolation_value"
_COORDINATES = (
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)


@rule("Resize", inputs=(1, 4), attrs=_RESIZE)
def resize(c: NodeCheck) -> list:
    x = c.shape(0)
    c.str("mode", "nearest", ("nearest", "linear", "cubic"))
    c.str("coordinate_transformation_mode", "half_pixel", _COORDINATES)
    c.str("nearest_mode", "round_prefer_floor", ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"))
    c.float("cubic_coeff_a", -0.75)
    c.flag("exclude_outside")
    c.float("extrapolation_value", 0.0)
    roi = c.const_floats(1, "input 1 (roi)") if c.has(1) else []
    if roi and len(roi) != 2 * len(x):
        c.fail("input 1 (roi)", f"{2 * len(x)} values", roi)
    sizes = c.const_ints(3, "input 3 (sizes)") if c.has(3) and c.shape(3) != (0,) else None
    scales = c.const_floats(2, "input 2 (scales)") if c.has(2) and c.shape(2) != (0,) else None
    if sizes is not None:
        if len(sizes) != len(x) or any(s < 1 for s in sizes):
            c.fail("input 3 (sizes)", f"{len(x)} sizes >= 1", sizes)
        out = sizes
    elif scales is not None:
        if len(scales) != len(x) or any(s <= 0 for s in scales):
            c.fail("input 2 (scales)", f"{len(x)} positive scales", scales)
        out = [math.floor(s * d) for s, d in zip(scales, x)]
    else:
        return [None]
    return [(bounded(c, out, "output shape"), c.dtype(0))]


@rule("Shape", attrs="start end")
def shape(c: NodeCheck) -> list:
    x = c.shape(0)
    start = c.int("start", 0)
    end = c.int("end", len(x))
    return [((len(x[start:end]),), "int64")]


@rule("Range", inputs=(3, 3))
def range_(c: NodeCheck) -> list:
    for i in range(3):
        if c.shape(i) not in ((), (1,)):
            c.fail(f"input {i} shape", "a scalar", list(c.shape(i)))
    values = [c.const_floats(i, f"input {i}") for i in range(3)]
    if any(v is None for v in values):
        return [None]
    start, limit, delta = (v[0] for v in values)
    if delta == 0:
        c.fail("input 2 (delta)", "non-zero", delta)
    return [(bounded(c, (max(math.ceil((limit - start) / delta), 0),), "output shape"), c.dtype(0))]


@rule("Expand", inputs=(2, 2))
def expand(c: NodeCheck) -> list:
    target = c.const_ints(1, "input 1 (shape)")
    if target is None:
        return [None]
    out = broadcast(c, [c.shape(0), tuple(target)])
    return [(bounded(c, out, "output shape"), c.dtype(0))]


@rule("ConstantOfShape", attrs="value")
def constant_of_shape(c: NodeCheck) -> list:
    value = c.array("value")
    if value is not None and value.size != 1:
        c.fail("attribute 'value'", "a one-element tensor", value)
    dims = c.const_ints(0, "input 0 (shape)")
    dtype = "float32" if value is None else value.dtype.name
    return [None if dims is None else (bounded(c, dims, "output shape"), dtype)]


@rule("Constant", inputs=(0, 0), attrs="value value_float value_floats value_int value_ints")
def constant(c: NodeCheck) -> list:
    if len(c.attrs) != 1:
        c.fail("attributes", "exactly one of value, value_float(s), value_int(s)", sorted(c.attrs))
    if "value" in c.attrs:
        v = c.array("value")
        return [(v.shape, v.dtype.name)]
    if "value_float" in c.attrs:
        c.float("value_float", 0.0)
        return [((), "float32")]
    if "value_int" in c.attrs:
        c.int("value_int", 0, -(2**63), 2**63 - 1)
        return [((), "int64")]
    key = next(iter(c.attrs))
    values = c.attrs[key]
    if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
        c.fail(f"attribute {key!r}", "a list of numbers", values)
    return [((len(values),), "float32" if key == "value_floats" else "int64")]


@rule("Tile", inputs=(2, 2))
def tile(c: NodeCheck) -> list:
    x = c.shape(0)
    repeats = c.const_ints(1, "input 1 (repeats)")
    if repeats is None:
        return [None]
    if len(repeats) != len(x) or any(r < 0 for r in repeats):
        c.fail("input 1 (repeats)", f"{len(x)} non-negative counts", repeats)
    return [(bounded(c, [d * r for d, r in zip(x, repeats)], "output shape"), c.dtype(0))]


@rule("DepthToSpace", "SpaceToDepth", attrs="blocksize mode")
def depth_space(c: NodeCheck) -> list:
    n, ch, h, w = c.need_rank(0, 4, 4)
    b = c.int("blocksize", None, 1, MAX_DIM)
    if c.node.op == "SpaceToDepth":
        if "mode" in c.attrs:
            c.fail("attribute 'mode'", "absent (SpaceToDepth has none)", c.attrs["mode"])
        if h % b or w % b:
            c.fail("attribute 'blocksize'", f"a divisor of height {h} and width {w}", b)
        return [((n, ch * b * b, h // b, w // b), c.dtype(0))]
    c.str("mode", "DCR", ("DCR", "CRD"))
    if ch % (b * b):
        c.fail("attribute 'blocksize'", f"such that blocksize^2 divides the {ch} channels", b)
    return [(bounded(c, (n, ch // (b * b), h * b, w * b), "output shape"), c.dtype(0))]
