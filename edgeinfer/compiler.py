"""The compile pipeline: ONNX model → optimized, placed and memory-planned :class:`Graph`.

Order matters: shapes must be complete before folding (``Shape`` of a static tensor folds to a
constant); folding exposes constant BatchNormalization parameters and weights; BatchNorm folding
happens before Conv fusion so a Conv→BN→Relu chain ends as one fused Conv; placement and the memory
plan see the final node list. The result is written to a .pack by :mod:`edgeinfer.pack`.

This module imports onnx (through the frontend); the runtime (``import edgeinfer``) never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeinfer.errors import CompileError, UnsupportedOpError
from edgeinfer.frontend.onnx_import import import_onnx, load_model
from edgeinfer.ir import Graph
from edgeinfer.ops import OPS
from edgeinfer.passes.constant_folding import fold_constants
from edgeinfer.passes.flops import count_flops
from edgeinfer.passes.fold_batchnorm import fold_batchnorm
from edgeinfer.passes.fuse_conv import fuse_conv
from edgeinfer.passes.memory_plan import plan_memory
from edgeinfer.passes.placement import place_nodes
from edgeinfer.passes.precision import round_weights_to_half
from edgeinfer.passes.shape_inference import infer_shapes
from edgeinfer.passes.simplify import remove_dead_code, remove_no_ops
from edgeinfer.pipelines.config import bind_to_model
from edgeinfer.pipelines.decode_graph import append_postprocessing


def compile_model(
    model: onnx.ModelProto | str | Path,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    optimize: bool = True,
    pipeline: dict | None = None,
    fp16: bool = False,
) -> Graph:
    """Compile an ONNX model (proto or file path) into a backend-neutral graph.

    ``input_shapes`` fixes dynamic input dimensions (symbolic batch dimensions default to 1).
    ``optimize=False`` skips constant folding and fusion (BatchNorm becomes Mul/Add): useful to
    tell a fusion bug from a kernel bug. ``pipeline`` (a validated pre/post-processing config) is
    bound to the model's first input and stored in the metadata; when it has a ``"decoder"`` section,
    the decoder graph is appended to the model first. ``fp16``: an fp16 pack (weights rounded to half and stored
    so; GPUs store every float tensor as half: passes/precision.py, planning/half_storage.py).
    """
    _check_input_shapes(input_shapes)
    proto, sha256, name = load_model(model)
    if pipeline and "decoder" in pipeline:
        proto = append_postprocessing(proto, pipeline)
    graph = import_onnx(proto, input_shapes)
    stats: dict[str, int] = {}
    infer_shapes(graph)
    if optimize:
        stats["folded_constants"] = fold_constants(graph)
    stats["removed_no_ops"] = remove_no_ops(graph)
    stats["batchnorms_into_conv"] = fold_batchnorm(graph, into_conv=optimize)
    if optimize:
        stats["conv_fusions"] = fuse_conv(graph)
    stats["dead_nodes"] = remove_dead_code(graph)
    _check_ops(graph)
    stats["cpu_nodes"] = place_nodes(graph)
    plan_memory(graph)
    node_flops = count_flops(graph)
    graph.metadata.update(
        source_name=name,
        source_sha256=sha256,
        flops=sum(node_flops.values()),
        node_flops=node_flops,
        input_shapes={i: list(graph.tensors[i].shape) for i in graph.inputs},
        compile_stats=stats,
        optimized=optimize,
    )
    if fp16:
        round_weights_to_half(graph)
    if pipeline is not None:
        # Presets leave the image input and size open: bind them to this model's first input.
        graph.metadata["pipeline"] = bind_to_model(pipeline, {i: graph.tensors[i].shape for i in graph.inputs})
    return graph


def _check_input_shapes(input_shapes: dict[str, tuple[int, ...]] | None) -> None:
    """Fixed input dims must be integers >= 0 (0: an empty tensor, as ONNX allows; the CLI asks for >= 1)."""
    for name, shape in (input_shapes or {}).items():
        dims = list(shape)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise CompileError(f"input shape for {name!r} must be integers >= 0 (e.g. 1x3x224x224); got {dims}")


def _check_ops(graph: Graph) -> None:
    """Every op left after the passes must have a NumPy implementation (the reference and fallback)."""
    for node in graph.nodes:
        if node.op not in OPS:
            raise UnsupportedOpError(
                node.op, node.name, graph.metadata.get("opset", 0), "edgeinfer has no implementation of this op"
            )
