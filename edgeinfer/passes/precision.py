"""fp16 packs (``edgeinfer compile --fp16``): the weights rounded to half, stored as half, used as float.

:func:`round_weights_to_half` rounds the weights and biases of the convolutions and matrix products (nearly all of
a CNN's bytes) to the nearest half and records their names in the metadata. The graph keeps them as float32 (with
half values), so it runs as it is anywhere; the pack writer stores those constants as float16 (half the file) and
the reader widens them back, exactly. GPU executables then store every float tensor as half
(planning/half_storage.py); CPU backends compute in float32 on the rounded weights.

Small constants (scales, anchors, the decoder's grids) are left alone: they are few bytes, and host nodes read them.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.errors import PackError
from edgeinfer.ir import Graph

PRECISION_KEY = "precision"  # metadata: "fp16" for packs compiled with --fp16
WEIGHTS_KEY = "fp16_weights"  # metadata: the constants stored as float16
HALF_MAX = 65504.0  # the largest finite half
# Inputs of each op that are weights or biases when they are constants.
WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1)}


def round_weights_to_half(graph: Graph) -> list[str]:
    """Round the weight constants of ``graph`` to half in place; mark the graph as an fp16 pack. A constant with a
    value that half cannot hold (beyond +-65504, or not finite) stays float32. Returns the rounded names."""
    names: set[str] = set()
    for node in graph.nodes:
        for index in WEIGHT_INPUTS.get(node.op, ()):
            name = node.inputs[index] if index < len(node.inputs) else ""
            array = graph.constants.get(name) if name else None
            if array is None or array.dtype != np.float32 or name in names:
                continue
            if array.size and not (np.isfinite(array).all() and np.abs(array).max() <= HALF_MAX):
                continue
            graph.constants[name] = array.astype(np.float16).astype(np.float32)
            names.add(name)
    graph.metadata[PRECISION_KEY] = "fp16"
    graph.metadata[WEIGHTS_KEY] = sorted(names)
    return sorted(names)


def half_weights(graph: Graph) -> set[str]:
    """The constants an fp16 pack stores as float16."""
    return set(graph.metadata.get(WEIGHTS_KEY, [])) if graph.metadata.get(PRECISION_KEY) == "fp16" else set()


def widen_weights(graph: Graph, where: str) -> None:
    """After reading a pack: its float16 weights as float32 again. Raises PackError if the metadata names a constant
    that is not a float16 constant of the pack."""
    for name in half_weights(graph):
        array = graph.constants.get(name)
        if array is None or array.dtype != np.float16:
            raise PackError(f"{where} is corrupt: metadata.{WEIGHTS_KEY} names {name!r}, which is not a float16 "
                            "constant of the pack")  # fmt: skip
        graph.constants[name] = array.astype(np.float32)
        info = graph.tensors.get(name)
        if info is not None:
            graph.tensors[name] = type(info)(info.name, info.shape, "float32", info.dynamic)
