"""Checks of the element-wise, reduction, matrix, quantization and detection ops (ONNX opset 17 forms)."""

from __future__ import annotations

from edgeinfer.ops.elementwise import ONNX_DTYPES
from edgeinfer.validation.context import NodeCheck, Shape, bounded, broadcast, rule

_UNARY = "Relu Sigmoid Tanh Exp Log Sqrt Neg Abs Floor Ceil HardSwish Identity".split()


@rule(*_UNARY)
def unary(c: NodeCheck) -> list:
    return [(c.shape(0), c.dtype(0))]


@rule("LeakyRelu", attrs="alpha")
def leaky_relu(c: NodeCheck) -> list:
    c.float("alpha", 0.01)
    return [(c.shape(0), c.dtype(0))]


@rule("HardSigmoid", attrs="alpha beta")
def hard_sigmoid(c: NodeCheck) -> list:
    c.float("alpha", 0.2)
    c.float("beta", 0.5)
    return [(c.shape(0), c.dtype(0))]


@rule("Softmax", "LogSoftmax", attrs="axis")
def softmax(c: NodeCheck) -> list:
    c.need_rank(0, 1)
    c.axis("axis", -1, c.rank(0))
    return [(c.shape(0), c.dtype(0))]


@rule("Clip", inputs=(1, 3))
def clip(c: NodeCheck) -> list:
    for i in (1, 2):
        if c.has(i) and c.shape(i) not in ((), (1,)):
            c.fail(f"input {i} ({'min' if i == 1 else 'max'}) shape", "a scalar", list(c.shape(i)))
    return [(c.shape(0), c.dtype(0))]


@rule("PRelu", inputs=(2, 2))
def prelu(c: NodeCheck) -> list:
    """The slope broadcasts to X (unidirectionally): the output has X's shape."""
    out = broadcast(c, [c.shape(0), c.shape(1)])
    if out != c.shape(0):
        c.fail("input 1 (slope) shape", f"broadcastable to the input {list(c.shape(0))}", list(c.shape(1)))
    return [(out, c.dtype(0))]


@rule("Add", "Sub", "Mul", "Div", "Pow", inputs=(2, 2))
def arithmetic(c: NodeCheck) -> list:
    return [(broadcast(c, [c.shape(0), c.shape(1)]), None)]


@rule("Equal", "Greater", "Less", inputs=(2, 2))
def comparison(c: NodeCheck) -> list:
    return [(broadcast(c, [c.shape(0), c.shape(1)]), "bool")]


@rule("Max", "Min", inputs=(1, 2**31))
def variadic(c: NodeCheck) -> list:
    return [(broadcast(c, [c.shape(i) for i in range(len(c.node.inputs))]), None)]


@rule("Where", inputs=(3, 3))
def where(c: NodeCheck) -> list:
    c.need_dtype(0, ("bool",))
    return [(broadcast(c, [c.shape(0), c.shape(1), c.shape(2)]), None)]


@rule("Cast", attrs="to saturate")
def cast(c: NodeCheck) -> list:
    to = c.int("to", None, 0, 2**31)
    if to not in ONNX_DTYPES:
        c.fail("attribute 'to'", f"an ONNX dtype code of {sorted(ONNX_DTYPES)}", to)
    return [(c.shape(0), ONNX_DTYPES[to].name)]


@rule("Dropout", inputs=(1, 3), outputs=(1, 2), attrs="seed")
def dropout(c: NodeCheck) -> list:
    c.int("seed", 0, -(2**63), 2**63 - 1)
    return [(c.shape(0), c.dtype(0)), (c.shape(0), "bool")]


# --- reductions ---------------------------------------------------------------------------------


def _reduced(c: NodeCheck, axes: list[int] | None) -> Shape:
    x = c.shape(0)
    keepdims = c.flag("keepdims", 1)
    if axes is None:
        return x  # axes computed at run time: only the rank is known
    if any(not -len(x) <= a < max(len(x), 1) for a in axes):
        c.fail("axes", f"axes in [-{len(x)}, {len(x) - 1}]", axes)
    if not axes:
        if c.flag("noop_with_empty_axes"):
            return x
        axes = list(range(len(x)))
    norm = {a % len(x) for a in axes} if x else set()
    if len(norm) != len(axes):
        c.fail("axes", "distinct axes", axes)
    return tuple(1 if i in norm else d for i, d in enumerate(x) if keepdims or i not in norm)


@rule("ReduceSum", "ReduceMean", "ReduceMax", inputs=(1, 2), attrs="axes keepdims noop_with_empty_axes")
def reduce(c: NodeCheck) -> list:
    if c.has(1):
        axes = c.const_ints(1, "input 1 (axes)")
    else:
        axes = c.ints("axes", []) if "axes" in c.attrs else []
    out = _reduced(c, axes)
    return [((out, c.dtype(0)) if axes is not None else None)]


@rule("ArgMax", attrs="axis keepdims select_last_index")
def arg_max(c: NodeCheck) -> list:
    x = c.need_rank(0, 1)
    axis = c.axis("axis", 0, len(x))
    c.flag("select_last_index")
    if x[axis] == 0:
        c.fail("input 0 shape", f"non-empty along axis {axis}", list(x))
    keep = c.flag("keepdims", 1)
    return [(tuple(1 if i == axis else d for i, d in enumerate(x) if keep or i != axis), "int64")]


# --- matrices -----------------------------------------------------------------------------------


@rule("Gemm", inputs=(2, 3), attrs="alpha beta transA transB")
def gemm(c: NodeCheck) -> list:
    a, b = c.need_rank(0, 2, 2), c.need_rank(1, 2, 2)
    c.float("alpha", 1.0)
    c.float("beta", 1.0)
    m, k = a[::-1] if c.flag("transA") else a
    kb, n = b[::-1] if c.flag("transB") else b
    if k != kb:
        c.fail("input shapes", f"inner dims equal (A {list(a)}, B {list(b)}, transA/transB applied)")
    if c.has(2) and broadcast(c, [c.shape(2), (m, n)]) != (m, n):
        c.fail("input 2 (C) shape", f"broadcastable to [{m}, {n}]", list(c.shape(2)))
    return [((m, n), c.dtype(0))]


@rule("MatMul", inputs=(2, 2))
def matmul(c: NodeCheck) -> list:
    a, b = c.need_rank(0, 1), c.need_rank(1, 1)
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        c.fail("input shapes", "inner dims equal", [list(a), list(b)])
    batch = broadcast(c, [a2[:-2], b2[:-2]])
    out = (*batch, *a2[-2:-1][len(a) == 1 :], *b2[-1:][len(b) == 1 :])  # 1-D operands lose their added dim
    return [(bounded(c, out, "output shape"), c.dtype(0))]


# --- quantization -------------------------------------------------------------------------------


def _quant_params(c: NodeCheck) -> None:
    """Scale and zero point: scalars (per tensor, ``axis`` unused) or 1-D along ``axis`` (per axis)."""
    x = c.shape(0)
    per_axis = [i for i in (1, 2) if c.has(i) and c.shape(i) not in ((), (1,))]
    if per_axis:
        axis = c.axis("axis", 1, len(x)) if x else c.fail("input 0 shape", "at least 1-D for per-axis parameters")
        for i in per_axis:
            if c.shape(i) != (x[axis],):
                c.fail(f"input {i} shape", f"a scalar or [{x[axis]}] (per axis {axis})", list(c.shape(i)))
    else:
        c.int("axis", 1)
    if c.has(2) and c.dtype(2) not in ("uint8", "int8", "int32", "uint16", "int16"):
        c.fail("input 2 (zero point) dtype", "an integer type", c.dtype(2))


@rule("QuantizeLinear", inputs=(2, 3), attrs="axis saturate")
def quantize_linear(c: NodeCheck) -> list:
    _quant_params(c)
    return [(c.shape(0), c.dtype(2) if c.has(2) else "uint8")]


@rule("DequantizeLinear", inputs=(2, 3), attrs="axis")
def dequantize_linear(c: NodeCheck) -> list:
    _quant_params(c)
    return [(c.shape(0), c.dtype(1))]


# --- detection ----------------------------------------------------------------------------------


@rule("NonMaxSuppression", inputs=(2, 5), attrs="center_point_box")
def non_max_suppression(c: NodeCheck) -> list:
    """boxes [B, N, 4], scores [B, C, N]; the output [selected, 3] is dynamic."""
    boxes, scores = c.need_rank(0, 3, 3), c.need_rank(1, 3, 3)
    if boxes[2] != 4 or scores[0] != boxes[0] or scores[2] != boxes[1]:
        c.fail("input shapes", "boxes [B, N, 4] and scores [B, C, N]", [list(boxes), list(scores)])
    c.flag("center_point_box")
    for i in (2, 3, 4):
        if c.has(i) and c.shape(i) not in ((), (1,)):
            c.fail(f"input {i} shape", "a scalar", list(c.shape(i)))
    return [None]


@rule("TopK", inputs=(2, 2), outputs=(2, 2), attrs="axis largest sorted")
def top_k(c: NodeCheck) -> list:
    x = c.need_rank(0, 1)
    axis = c.axis("axis", -1, len(x))
    c.flag("largest", 1)
    c.flag("sorted", 1)
    if c.shape(1) not in ((), (1,)):
        c.fail("input 1 (k) shape", "a scalar", list(c.shape(1)))
    k = c.const_ints(1, "input 1 (k)")
    if k is None:
        return [None, None]
    if not 0 <= k[0] <= x[axis]:
        c.fail("input 1 (k)", f"in [0, {x[axis]}] (the length of axis {axis})", k[0])
    out = tuple(k[0] if i == axis else d for i, d in enumerate(x))
    return [(out, c.dtype(0)), (out, "int64")]
