"""The backend-neutral intermediate representation.

A :class:`Graph` is a flat, topologically ordered list of :class:`Node` objects over named tensors.
Every tensor has a static shape and a numpy dtype name, except tensors downstream of a
data-dependent op (NonMaxSuppression), whose shape is marked dynamic and which always run on the CPU.

Node inputs follow the canonical ONNX opset-17 signature of the op (the frontend upgrades older
opsets), with ``""`` for an omitted optional input. Constant inputs (weights, Reshape shapes, Slice
starts, ...) are entries of ``Graph.constants``. Attributes are plain JSON values so that a graph
serialises without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Placement of a node (see passes/placement.py): on the backend's device, or on the host through the NumPy ops.
# "cpu" is the value packs store for the host (docs/pack-format.md); it is not the NumPy backend's device "cpu".
DEVICE = "device"
HOST = "cpu"


@dataclass
class TensorInfo:
    """Static description of one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"
    dynamic: bool = False  # shape only known at run time (downstream of a data-dependent op)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        d = {"shape": list(self.shape), "dtype": self.dtype}
        if self.dynamic:
            d["dynamic"] = True
        return d

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> TensorInfo:
        return cls(name, tuple(int(s) for s in d["shape"]), str(d["dtype"]), bool(d.get("dynamic", False)))


@dataclass
class Node:
    """One operation: ``outputs = op(inputs, **attrs)``."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    placement: str = DEVICE

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
            "placement": self.placement,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        return cls(
            name=str(d["name"]),
            op=str(d["op"]),
            inputs=[str(x) for x in d["inputs"]],
            outputs=[str(x) for x in d["outputs"]],
            attrs=dict(d.get("attrs", {})),
            placement=str(d.get("placement", DEVICE)),
        )


@dataclass
class MemoryPlan:
    """Where each planned intermediate tensor lives inside one arena (byte offsets)."""

    offsets: dict[str, int] = field(default_factory=dict)
    arena_bytes: int = 0
    naive_bytes: int = 0  # sum of the planned tensors' sizes, for comparison
    alignment: int = 256

    def to_json(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets,
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "alignment": self.alignment,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MemoryPlan:
        return cls(
            offsets={str(k): int(v) for k, v in d.get("offsets", {}).items()},
            arena_bytes=int(d.get("arena_bytes", 0)),
            naive_bytes=int(d.get("naive_bytes", 0)),
            alignment=int(d.get("alignment", 256)),
        )


@dataclass
class Graph:
    """A whole model: nodes in execution order, tensor table, constants and metadata."""

    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    memory_plan: MemoryPlan = field(default_factory=MemoryPlan)

    def producers(self) -> dict[str, Node]:
        """Map tensor name -> node that produces it."""
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Map tensor name -> nodes that read it (in execution order)."""
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def is_constant(self, name: str) -> bool:
        return name in self.constants
