"""Per-op validation: the registry of op checks and the typed view of one node that they read.

Each op has one check function, registered with :func:`rule` together with its input and output counts
and the attributes it may carry (anything else is refused). A check reads the node through
:class:`NodeCheck`, whose accessors enforce the type and range of each attribute and fail with a
:class:`PackError` naming the node and the field, and returns the shape (and dtype where the op fixes
it) of each output, which the driver compares with the tensor table: a pack whose recorded shapes do not
follow from its inputs and attributes is refused before any kernel sizes a buffer from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from edgeinfer.errors import PackError
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.validation.header import MAX_DIM, MAX_ELEMENTS

Shape = tuple[int, ...]
# What a check says about one output: its shape, or (shape, dtype), or None (not derivable at load).
Expected = Shape | tuple[Shape, str] | None
Check = Callable[["NodeCheck"], Sequence[Expected] | None]
FLOATS = ("float16", "float32", "float64")
MAX_CONST_VALUES = 1 << 16  # shape-like constant inputs (Reshape shapes, Slice starts) are small


@dataclass(frozen=True)
class OpRule:
    check: Check
    inputs: tuple[int, int]
    outputs: tuple[int, int]
    attrs: frozenset[str]


RULES: dict[str, OpRule] = {}


def rule(*ops: str, inputs: tuple[int, int] = (1, 1), outputs: tuple[int, int] = (1, 1), attrs: str = "") -> Any:
    """Register the check of ``ops``: input and output counts (min, max) and the allowed attribute names."""

    def wrap(check: Check) -> Check:
        for op in ops:
            RULES[op] = OpRule(check, inputs, outputs, frozenset(attrs.split()))
        return check

    return wrap


class NodeCheck:
    """One node of a graph under validation."""

    def __init__(self, node: Node, graph: Graph, where: str):
        self.node, self.graph, self.where = node, graph, where
        self.attrs = node.attrs

    def fail(self, field: str, expected: str, got: Any = None) -> NoReturn:
        got_text = "" if got is None else f"; got {_show(got)}"
        raise PackError(f"{self.where}: node {self.node.name!r} ({self.node.op}): {field} must be {expected}{got_text}")

    # --- inputs -----------------------------------------------------------------------------------

    def has(self, i: int) -> bool:
        return len(self.node.inputs) > i and self.node.inputs[i] != ""

    def info(self, i: int) -> TensorInfo:
        if not self.has(i):
            self.fail(f"input {i}", "present")
        return self.graph.tensors[self.node.inputs[i]]

    def shape(self, i: int) -> Shape:
        return self.info(i).shape

    def rank(self, i: int) -> int:
        return len(self.shape(i))

    def dtype(self, i: int) -> str:
        return self.info(i).dtype

    def need_rank(self, i: int, lo: int, hi: int | None = None) -> Shape:
        s = self.shape(i)
        if len(s) < lo or (hi is not None and len(s) > hi):
            self.fail(f"input {i} ({self.node.inputs[i]!r}) rank", f"{lo}" if hi == lo else f">= {lo}", list(s))
        return s

    def need_dtype(self, i: int, allowed: Sequence[str]) -> str:
        dt = self.dtype(i)
        if dt not in allowed:
            self.fail(f"input {i} ({self.node.inputs[i]!r}) dtype", f"one of {', '.join(allowed)}", dt)
        return dt

    def value(self, i: int) -> np.ndarray | None:
        """The constant value of input ``i``, or None when it is computed at run time (or omitted)."""
        return self.graph.constants.get(self.node.inputs[i]) if self.has(i) else None

    def const_ints(self, i: int, field: str) -> list[int] | None:
        """A small integer constant input (shape, axes, pads, ...) as Python ints; None if not a constant."""
        v = self.value(i)
        if v is None:
            return None
        if v.dtype.kind not in "iu" or v.size > MAX_CONST_VALUES:
            self.fail(field, f"an integer tensor of at most {MAX_CONST_VALUES} values", f"{v.dtype}{list(v.shape)}")
        return [int(x) for x in v.reshape(-1)]

    def const_floats(self, i: int, field: str) -> list[float] | None:
        v = self.value(i)
        if v is None:
            return None
        if v.dtype.kind not in "fiu" or v.size > MAX_CONST_VALUES:
            self.fail(field, f"a numeric tensor of at most {MAX_CONST_VALUES} values", f"{v.dtype}{list(v.shape)}")
        values = [float(x) for x in v.reshape(-1)]
        if not all(math.isfinite(x) for x in values):
            self.fail(field, "finite", values)
        return values

    # --- attributes -------------------------------------------------------------------------------

    def int(self, key: str, default: int | None = None, lo: int = -MAX_DIM, hi: int = MAX_DIM) -> int:
        v = self.attrs.get(key, default)
        if v is None:
            self.fail(f"attribute {key!r}", "present (an integer)")
        if type(v) is not int or not lo <= v <= hi:
            self.fail(f"attribute {key!r}", f"an integer in [{lo}, {hi}]", v)
        return v

    def flag(self, key: str, default: int = 0) -> bool:
        return bool(self.int(key, default, 0, 1))

    def ints(
        self, key: str, default: Sequence[int] | None, length: int | None = None, lo: int = -MAX_DIM, hi: int = MAX_DIM
    ) -> list[int]:
        v = self.attrs.get(key, default)
        if v is None:
            self.fail(f"attribute {key!r}", "present (a list of integers)")
        ok = isinstance(v, (list, tuple)) and all(type(x) is int and lo <= x <= hi for x in v)
        if not ok or (length is not None and len(v) != length):
            size = f"{length} " if length is not None else ""
            self.fail(f"attribute {key!r}", f"a list of {size}integers in [{lo}, {hi}]", v)
        return list(v)

    def float(self, key: str, default: float) -> float:
        v = self.attrs.get(key, default)
        if type(v) not in (int, float) or not math.isfinite(v):
            self.fail(f"attribute {key!r}", "a finite number", v)
        return float(v)

    def str(self, key: str, default: str, choices: Sequence[str]) -> str:
        v = self.attrs.get(key, default)
        if not isinstance(v, str) or v not in choices:
            self.fail(f"attribute {key!r}", f"one of {', '.join(map(repr, choices))}", v)
        return v

    def axis(self, key: str, default: int, rank: int, extra: int = 0) -> int:
        """An axis in ``[-rank, rank + extra - 1]`` (``extra`` = 1 where the end is allowed), made non-negative."""
        a = self.int(key, default, -rank, rank - 1 + extra)
        return a + rank if a < 0 else a

    def array(self, key: str) -> np.ndarray | None:
        v = self.attrs.get(key)
        if v is not None and not isinstance(v, np.ndarray):
            self.fail(f"attribute {key!r}", "a tensor", v)
        return v


def _show(v: Any) -> str:
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= 80 else text[:77] + "..."


def broadcast(check: NodeCheck, shapes: Sequence[Shape], field: str = "input shapes") -> Shape:
    """NumPy/ONNX multidirectional broadcasting of ``shapes``."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        check.fail(field, "broadcastable against each other", [list(s) for s in shapes])


def bounded(check: NodeCheck, shape: Sequence[int], field: str) -> Shape:
    """A computed output shape: non-negative dims and a size the runtime may allocate."""
    if any(d < 0 or d > MAX_DIM for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        check.fail(field, f"non-negative dims of at most {MAX_ELEMENTS} elements in all", list(shape))
    return tuple(shape)
