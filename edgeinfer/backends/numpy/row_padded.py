"""Depthwise inputs written straight into a zero-padded buffer by the Conv that produces them.

A channels-last depthwise conv reads its input through a padded copy; in MobileNetV2 the copies cost
~0.9 ms per run. Here the producing conv's sgemm (a 1x1 expansion, or the stem) writes its NHWC result
into the interior of a buffer that has zero rows above and below the image but *no* zero columns, so the
interior is one contiguous block. The depthwise then reads every tap as a strided view of the flat buffer: a tap left
of column 0 (right of the last column) reads the neighbouring row's last (first) pixel instead of a
zero, and the tiled weights are zero at exactly those output columns
(``edgeinfer.backends.numpy.conv_channels_last.row_padded_tiled_weights``).
The zero weights only cancel finite values, so the producer must bound its output: a Clip activation
with finite limits (MobileNet's ReLU6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeinfer.ir import Graph
from edgeinfer.ops.buffers import filled_buffer
from edgeinfer.ops.conv import out_size, window_attrs


@dataclass(frozen=True)
class RowPadded:
    """Geometry of one depthwise input buffer: an (H, W, C) image between zero rows, flat, with margins."""

    key: str  # names the buffer (per thread): the depthwise node
    hwc: tuple[int, int, int]
    top: int  # zero rows above the image
    rows: int  # rows in all: top + H + the zero rows below
    margin: int  # elements before the first row and after the last

    def buffer(self) -> np.ndarray:
        """The flat buffer; its zero rows and margins are written once and stay zero."""
        h, w, c = self.hwc
        size = 2 * self.margin + self.rows * w * c
        return filled_buffer(("row_padded", self.key, self.hwc, self.top, self.rows), (size,), np.float32, 0.0)

    def interior(self) -> np.ndarray:
        """The image block (1, H, W, C), contiguous: what the producer writes."""
        h, w, c = self.hwc
        start = self.margin + self.top * w * c
        return self.buffer()[start : start + h * w * c].reshape(1, h, w, c)

    def tap_source(self, strides: list[int], pad_left: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """``(base, byte strides)`` of the (kh, kw, Ho, Wo, C) tap view: ``[a, b, i, j]`` reads input row
        ``i*sh + a - top``, column ``j*sw + b - pad_left`` (a column outside the row reads the neighbouring row).
        ``base`` is C-contiguous, so the view is cheap to build (:func:`.layout.strided_view`)."""
        _, w, c = self.hwc
        flat = self.buffer()
        item = flat.itemsize
        base = flat[self.margin - pad_left * c :]
        return base, (w * c * item, c * item, strides[0] * w * c * item, strides[1] * c * item, item)


def _bounded_output(node_attrs: dict) -> bool:
    """Whether a fused Conv's activation keeps every output finite (Clip with finite limits)."""
    params = node_attrs.get("activation_params") or []
    return node_attrs.get("activation") == "clip" and len(params) == 2 and all(math.isfinite(p) for p in params)


def plan_row_padded(graph: Graph) -> dict[int, RowPadded]:
    """Depthwise Convs whose input comes from a bounded group-1 Conv read by nothing else, by both node indices.

    The returned map holds each such producer's index and its depthwise consumer's index, both to the
    buffer geometry they share.
    """
    producer = {out: i for i, node in enumerate(graph.nodes) for out in node.outputs if out}
    readers = graph.consumers()
    plan: dict[int, RowPadded] = {}
    for j, node in enumerate(graph.nodes):
        if node.op != "Conv" or len(node.inputs) < 2 or node.inputs[0] not in producer:
            continue
        x_info = graph.tensors.get(node.inputs[0])
        w = graph.constants.get(node.inputs[1])
        if x_info is None or w is None or x_info.dynamic or len(x_info.shape) != 4 or x_info.dtype != "float32":
            continue
        n, c, h, wd = x_info.shape
        group = int(node.attrs.get("group", 1))
        kernel, strides, dilations, pads = window_attrs(node.attrs, (h, wd), w.shape[2:])
        if n != 1 or not (group == c == w.shape[0] > 1) or dilations != [1, 1] or kernel[1] > wd:
            continue
        if len(node.inputs) > 3 and node.inputs[3]:
            continue  # a fused residual: keep the plain path
        i = producer[node.inputs[0]]
        p = graph.nodes[i]
        # group-1 2-D Convs compute channels-last and fill the ``out`` block given: 1x1 sgemms, NHWC im2col, stems
        if p.op != "Conv" or int(p.attrs.get("group", 1)) != 1 or len(p.attrs.get("kernel_shape", [])) != 2:
            continue
        if not _bounded_output(p.attrs) or len(readers.get(node.inputs[0], [])) != 1:
            continue
        if node.inputs[0] in graph.outputs or i in plan or j in plan:
            continue
        ho = out_size(h, kernel[0], strides[0], 1, pads[0], pads[2])
        rows = max(pads[0] + h + pads[2], (ho - 1) * strides[0] + kernel[0])
        geometry = RowPadded(node.name, (h, wd, c), pads[0], rows, (kernel[1] + 1) * c)
        plan[i] = plan[j] = geometry
    return plan
