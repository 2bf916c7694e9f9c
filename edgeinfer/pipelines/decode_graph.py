"""Compile time: append a detector's decoder and NMS to its ONNX model as ordinary nodes.

The decoder is elementwise work (Slice, Sigmoid, Exp, Mul, Add, Concat, ReduceMax, ArgMax) that the
GPU backends run as kernels; ``NonMaxSuppression`` and the Gathers after it are placed on the CPU by
the placement pass. The model's outputs are replaced by (see ``results.py``)::

    det_boxes   [M, 4] float32  x1, y1, x2, y2 in network-input pixels
    det_scores  [M]    float32  highest first
    det_classes [M]    int64    index into the labels

NMS is class-agnostic by default: each box competes with the score of its best class. With
``class_aware`` the boxes of different classes are shifted apart so that one NMS call never lets them
suppress each other. ONNX NMS keeps ``score > score_threshold`` and suppresses ``IoU > iou_threshold``,
exactly the reference's rules. This module imports onnx; the runtime never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from edgeinfer.errors import PipelineError
from edgeinfer.pipelines.config import validate_pipeline
from edgeinfer.pipelines.results import DET_BOXES, DET_CLASSES, DET_SCORES

MIN_OPSET = 11  # NonMaxSuppression and input-form Slice; older models are converted up to it


class _Builder:
    """Adds uniquely named nodes and constants to a graph."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"postprocess/{hint}_{self._count}"

    def const(self, value: Any, dtype: type = np.float32, hint: str = "c") -> str:
        name = self._name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, **attrs: Any) -> Any:
        names = outputs if isinstance(outputs, list) else [self._name(op_type.lower()) for _ in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, list(inputs), names, name=self._name(op_type), **attrs))
        return names[0] if len(names) == 1 else names

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        c = self.const
        return self.op("Slice", x, c([start], np.int64), c([end], np.int64), c([axis], np.int64))

    def reduce_max(self, x: str, axis: int) -> str:
        if self.opset >= 18:  # axes became an input in opset 18
            return self.op("ReduceMax", x, self.const([axis], np.int64), keepdims=0)
        return self.op("ReduceMax", x, axes=[axis], keepdims=0)

    def unsqueeze(self, x: str, axis: int) -> str:
        if self.opset >= 13:  # axes became an input in opset 13
            return self.op("Unsqueeze", x, self.const([axis], np.int64))
        return self.op("Unsqueeze", x, axes=[axis])

    def corners(self, cxy: str, wh: str) -> str:
        half = self.op("Mul", wh, self.const(0.5))
        return self.op("Concat", self.op("Sub", cxy, half), self.op("Add", cxy, half), axis=2)


def append_postprocessing(model: onnx.ModelProto, pipeline: dict[str, Any]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose outputs are the decoded, NMS-filtered detections.

    A classification pipeline (or one without a decoder) returns the model unchanged.
    """
    if pipeline.get("task") != "detection" or not pipeline.get("decoder"):
        return model
    p = validate_pipeline(pipeline)
    model = _with_min_opset(model)
    b = _Builder(model)
    in_h, in_w = _input_size(model, p)
    shapes = _output_shapes(model)
    decoder = DECODERS[p["decoder"]["type"]]
    boxes, scores, classes = decoder(b, p["decoder"], shapes, (in_h, in_w))
    _append_nms(b, p, boxes, scores, classes, max(in_h, in_w))
    onnx.checker.check_model(model)
    return model


def _with_min_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset >= MIN_OPSET:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    return version_converter.convert_version(model, MIN_OPSET)


def _input_size(model: onnx.ModelProto, p: dict[str, Any]) -> tuple[int, int]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    name = p.get("input") or inputs[0].name
    dims = next(([d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs if i.name == name), None)
    if dims is None:
        raise PipelineError(f"pipeline input {name!r} is not a model input; inputs are {[i.name for i in inputs]}")
    h, w = (dims[2], dims[3]) if p["layout"] == "NCHW" else (dims[1], dims[2])
    if h > 0 and w > 0:
        return h, w
    if not p.get("size"):
        raise PipelineError(f"input {name!r} has a dynamic size {dims}: set the pipeline key 'size' [h, w]")
    return tuple(p["size"])  # type: ignore[return-value]


def _output_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for o in model.graph.output:
        dims = [d.dim_value for d in o.type.tensor_type.shape.dim]
        if not dims or any(d <= 0 for d in dims):
            raise PipelineError(f"model output {o.name!r} needs a static shape to append a decoder, got {dims}")
        shapes[o.name] = dims
    return shapes


def _pick(shapes: dict[str, list[int]], name: str | None, what: str) -> tuple[str, list[int]]:
    name = name or next(iter(shapes))
    if name not in shapes:
        raise PipelineError(f"decoder {what} {name!r} is not a model output; outputs are {list(shapes)}")
    return name, shapes[name]


def _grid(h: int, w: int) -> np.ndarray:
    """(x, y) of every cell of an h x w grid, row-major with x fastest: shape (h*w, 2)."""
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _decode_yolox(b: _Builder, d: dict, shapes: dict, size: tuple[int, int]) -> tuple[str, str, str]:
    # Rows [dx, dy, log w, log h, obj, classes...] over the grids of each stride (outputs already sigmoided).
    out, shape = _pick(shapes, d["output"], "output")
    grids = [_grid(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in d["strides"]]
    n = sum(len(g) for g in grids)
    if len(shape) != 3 or shape[1] != n:
        raise PipelineError(
            f"yolox output {out!r} has shape {shape}; strides {d['strides']} at {size} need [1, {n}, 5+C]"
        )
    grid = b.const(np.concatenate(grids)[None])
    stride = b.const(np.concatenate([np.full((len(g), 1), s, np.float32) for g, s in zip(grids, d["strides"])])[None])
    cxy = b.op("Mul", b.op("Add", b.slice(out, 0, 2, 2), grid), stride)
    wh = b.op("Mul", b.op("Exp", b.slice(out, 2, 4, 2)), stride)
    cls = b.slice(out, 5, shape[2], 2)
    if d["score"] == "obj*cls":
        cls = b.op("Mul", b.slice(out, 4, 5, 2), cls)
    return b.corners(cxy, wh), b.reduce_max(cls, 2), b.op("ArgMax", cls, axis=2, keepdims=0)


def _decode_fastestdet(b: _Builder, d: dict, shapes: dict, size: tuple[int, int]) -> tuple[str, str, str]:
    # One [obj, tx, ty, w, h, classes...] x H x W head; boxes are fractions of the input image.
    out, shape = _pick(shapes, d["output"], "output")
    if len(shape) != 4:
        raise PipelineError(f"fastestdet output {out!r} must be [1, 5+C, H, W], got {shape}")
    _, ch, gh, gw = shape
    rows = b.op("Reshape", b.op("Transpose", out, perm=[0, 2, 3, 1]), b.const([1, gh * gw, ch], np.int64))
    cell = b.const([[[size[1] / gw, size[0] / gh]]])
    cxy = b.op("Mul", b.op("Add", b.op("Tanh", b.slice(rows, 1, 3, 2)), b.const(_grid(gh, gw)[None])), cell)
    wh = b.op("Mul", b.op("Sigmoid", b.slice(rows, 3, 5, 2)), b.const([[[size[1], size[0]]]]))
    cls = b.slice(rows, 5, ch, 2)
    obj = b.op("Pow", b.op("Reshape", b.slice(rows, 0, 1, 2), b.const([1, gh * gw], np.int64)), b.const(d["obj_power"]))
    score = b.op("Mul", obj, b.op("Pow", b.reduce_max(cls, 2), b.const(d["cls_power"])))
    return b.corners(cxy, wh), score, b.op("ArgMax", cls, axis=2, keepdims=0)


def ssd_priors(spec: dict[str, Any] | list, size: tuple[int, int]) -> np.ndarray:
    """SSD priors (cx, cy, w, h), normalised, in UltraFace's order: stride, row, column, min size."""
    if isinstance(spec, list):
        return np.asarray(spec, np.float32)
    h, w = size
    priors = []
    for stride, min_sizes in zip(spec["strides"], spec["min_sizes"]):
        for y in range(math.ceil(h / stride)):
            for x in range(math.ceil(w / stride)):
                for m in min_sizes:
                    priors.append([(x + 0.5) * stride / w, (y + 0.5) * stride / h, m / w, m / h])
    return np.clip(np.asarray(priors, np.float32), 0.0, 1.0)


def _decode_ssd(b: _Builder, d: dict, shapes: dict, size: tuple[int, int]) -> tuple[str, str, str]:
    names = list(shapes)
    scores, s_shape = _pick(shapes, d["scores_output"] or names[0], "scores_output")
    boxes, x_shape = _pick(shapes, d["boxes_output"] or names[-1], "boxes_output")
    n, num_classes = s_shape[1], s_shape[2]
    if len(s_shape) != 3 or x_shape != [1, n, 4]:
        raise PipelineError(f"ssd outputs must be scores [1, N, C] and boxes [1, N, 4], got {s_shape} and {x_shape}")
    if d["priors"] is not None:
        priors = ssd_priors(d["priors"], size)
        if len(priors) != n:
            raise PipelineError(f"decoder.priors gives {len(priors)} priors, the model has {n} boxes")
        centre, extent = b.const(priors[None, :, :2]), b.const(priors[None, :, 2:])
        var_c, var_s = d["variances"]
        cxy = b.op("Add", b.op("Mul", b.op("Mul", b.slice(boxes, 0, 2, 2), b.const(var_c)), extent), centre)
        wh = b.op("Mul", b.op("Exp", b.op("Mul", b.slice(boxes, 2, 4, 2), b.const(var_s))), extent)
        boxes = b.corners(cxy, wh)
    elif d["box_format"] == "cxcywh":
        boxes = b.corners(b.slice(boxes, 0, 2, 2), b.slice(boxes, 2, 4, 2))
    if d["normalized"]:
        boxes = b.op("Mul", boxes, b.const([[[size[1], size[0], size[1], size[0]]]]))
    keep = [c for c in range(num_classes) if c != d["background_class"]]
    cls_scores = b.op("Gather", scores, b.const(keep, np.int64), axis=2)
    # ArgMax indexes the kept columns; map it back to the model's class ids.
    classes = b.op("Gather", b.const(keep, np.int64), b.op("ArgMax", cls_scores, axis=2, keepdims=0), axis=0)
    return boxes, b.reduce_max(cls_scores, 2), classes


def _decode_yolo_anchors(b: _Builder, d: dict, shapes: dict, size: tuple[int, int]) -> tuple[str, str, str]:
    # One [1, A*(5+C), H, W] head per stride (YOLOv3/v5 style), anchors in input pixels.
    outputs = d["outputs"] or list(shapes)[: len(d["strides"])]
    rows, grids, anchors, strides = [], [], [], []
    for name, stride, anc in zip(outputs, d["strides"], d["anchors"]):
        out, shape = _pick(shapes, name, "output")
        a = len(anc) // 2
        _, ch, gh, gw = shape
        if ch % a:
            raise PipelineError(f"yolo-anchors output {out!r} has {ch} channels, not a multiple of {a} anchors")
        per = ch // a
        x = b.op("Reshape", out, b.const([1, a, per, gh, gw], np.int64))
        x = b.op("Transpose", x, perm=[0, 1, 3, 4, 2])
        rows.append(b.op("Reshape", x, b.const([1, a * gh * gw, per], np.int64)))
        grids.append(np.tile(_grid(gh, gw), (a, 1)))
        anchors.append(np.repeat(np.asarray(anc, np.float32).reshape(a, 2), gh * gw, axis=0))
        strides.append(np.full((a * gh * gw, 1), stride, np.float32))
    allrows = b.op("Concat", *rows, axis=1) if len(rows) > 1 else rows[0]
    per = shapes[outputs[0]][1] // (len(d["anchors"][0]) // 2)
    grid, anchor = b.const(np.concatenate(grids)[None]), b.const(np.concatenate(anchors)[None])
    stride = b.const(np.concatenate(strides)[None])
    act = b.op("Sigmoid", allrows) if d["sigmoid"] else allrows
    txy, twh = b.slice(act, 0, 2, 2), b.slice(act, 2, 4, 2)
    if d["formula"] == "v5":  # xy = (2s - 0.5 + g) * stride, wh = (2s)^2 * anchor
        two = b.const(2.0)
        cxy = b.op("Mul", b.op("Add", b.op("Sub", b.op("Mul", txy, two), b.const(0.5)), grid), stride)
        wh = b.op("Mul", b.op("Pow", b.op("Mul", twh, two), two), anchor)
    else:  # v3: xy = (s + g) * stride, wh = exp(t) * anchor
        cxy = b.op("Mul", b.op("Add", txy, grid), stride)
        wh = b.op("Mul", b.op("Exp", b.slice(allrows, 2, 4, 2)), anchor)
    cls = b.op("Mul", b.slice(act, 4, 5, 2), b.slice(act, 5, per, 2))
    return b.corners(cxy, wh), b.reduce_max(cls, 2), b.op("ArgMax", cls, axis=2, keepdims=0)


Decoder = Callable[[_Builder, dict, dict, tuple[int, int]], tuple[str, str, str]]
DECODERS: dict[str, Decoder] = {
    "yolox": _decode_yolox,
    "fastestdet": _decode_fastestdet,
    "ssd": _decode_ssd,
    "yolo-anchors": _decode_yolo_anchors,
}


def _append_nms(b: _Builder, p: dict[str, Any], boxes: str, scores: str, classes: str, extent: int) -> None:
    """boxes [1,N,4], scores [1,N], classes [1,N] -> graph outputs det_boxes, det_scores, det_classes."""
    nms_boxes = boxes
    if p["class_aware"]:
        # Shift each class into its own region (more than any box's extent apart).
        shift = b.op("Mul", b.op("Cast", classes, to=TensorProto.FLOAT), b.const(4.0 * extent))
        nms_boxes = b.op("Add", boxes, b.unsqueeze(shift, 2))
    selected = b.op(
        "NonMaxSuppression",
        nms_boxes,
        b.unsqueeze(scores, 1),
        b.const([p["max_detections"]], np.int64),
        b.const([p["nms_iou"]]),
        b.const([p["score_threshold"]]),
        center_point_box=0,
    )
    keep = b.op("Gather", selected, b.const(2, np.int64), axis=1)  # column 2 = box index
    flat = b.const([-1], np.int64)
    b.op("Gather", b.op("Reshape", boxes, b.const([-1, 4], np.int64)), keep, axis=0, outputs=[DET_BOXES])
    b.op("Gather", b.op("Reshape", scores, flat), keep, axis=0, outputs=[DET_SCORES])
    b.op("Gather", b.op("Reshape", classes, flat), keep, axis=0, outputs=[DET_CLASSES])
    del b.graph.output[:]
    b.graph.output.extend(
        [
            helper.make_tensor_value_info(DET_BOXES, TensorProto.FLOAT, ["num_detections", 4]),
            helper.make_tensor_value_info(DET_SCORES, TensorProto.FLOAT, ["num_detections"]),
            helper.make_tensor_value_info(DET_CLASSES, TensorProto.INT64, ["num_detections"]),
        ]
    )
