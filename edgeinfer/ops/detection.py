"""Detection post-processing ops: NonMaxSuppression and TopK.

Both are data-dependent and sort-heavy, so the placement pass keeps them on the CPU (``cpu_only``);
NMS also has a value-dependent output shape (``dynamic_shape``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeinfer.ops.registry import register


def _corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    """``[..., 4]`` boxes as ``(y_min, x_min, y_max, x_max)``; corner boxes may list their corners in either order."""
    if center_point_box:
        x, y, w, h = np.moveaxis(boxes, -1, 0)
        return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=-1)


def _greedy_nms(corners: np.ndarray, valid: np.ndarray, max_boxes: int, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on ``R`` independent rows at once; returns a ``[R, n]`` mask of the kept candidates.

    ``corners`` is ``[R, n, 4]`` and each row's candidates are in descending score order (``valid``
    marks the real ones). Every round keeps, in each row, the best candidate still alive and clears the
    candidates it overlaps by more than ``iou_threshold``; so the Python loop runs once per kept box of
    the fullest row, not once per box. Empty overlaps and degenerate boxes never suppress (as in ONNX).
    """
    y0, x0, y1, x1 = np.moveaxis(corners, -1, 0)
    areas = (y1 - y0) * (x1 - x0)
    alive = valid.copy()
    kept = np.zeros_like(valid)
    rows = np.arange(valid.shape[0])
    for _ in range(min(max_boxes, valid.shape[1])):
        best = np.argmax(alive, axis=1)
        picked = alive[rows, best]
        if not picked.any():
            break
        kept[rows[picked], best[picked]] = True
        alive[rows, best] = False
        b = (rows, best)
        inter_h = np.minimum(y1[b][:, None], y1) - np.maximum(y0[b][:, None], y0)
        inter_w = np.minimum(x1[b][:, None], x1) - np.maximum(x0[b][:, None], x0)
        inter = np.maximum(inter_h, 0) * np.maximum(inter_w, 0)
        union = areas[b][:, None] + areas - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = (inter > 0) & (areas > 0) & (union > 0) & (inter / union > iou_threshold)
        alive &= ~(overlap & (picked & (areas[b] > 0))[:, None])
    return kept


def _scalar_input(inputs: list[np.ndarray | None], i: int) -> Any:
    x = inputs[i] if len(inputs) > i else None
    return None if x is None or x.size == 0 else x.reshape(-1)[0]


@register("NonMaxSuppression", cpu_only=True, dynamic_shape=True)
def non_max_suppression(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """ONNX NonMaxSuppression: ``[num_selected, 3]`` int64 rows ``(batch, class, box)``.

    Rows are ordered by batch, then class, then descending score, exactly as ONNX's reference. A box is
    suppressed when its IoU with a kept box is greater than ``iou_threshold``; with a score threshold
    only boxes scoring strictly above it are candidates.
    """
    boxes, scores = inputs[0], inputs[1]
    max_boxes = _scalar_input(inputs, 2)
    max_boxes = 0 if max_boxes is None else max(int(max_boxes), 0)
    iou_threshold = _scalar_input(inputs, 3)
    iou_threshold = 0.0 if iou_threshold is None else iou_threshold
    score_threshold = _scalar_input(inputs, 4)
    num_batches, num_classes, num_boxes = scores.shape
    # One row per (batch, class), candidates sorted by descending score (ties: lower index first).
    row_scores = scores.reshape(num_batches * num_classes, num_boxes)
    order = np.argsort(-row_scores, axis=1, kind="stable")
    valid = np.ones(order.shape, dtype=bool)
    if score_threshold is not None:
        valid = np.take_along_axis(row_scores, order, axis=1) > score_threshold
        width = int(valid.sum(axis=1).max(initial=0))  # candidates are a prefix of each sorted row
        order, valid = order[:, :width], valid[:, :width]
    corners = _corners(boxes, int(attrs.get("center_point_box", 0)))
    batch_of_row = np.repeat(np.arange(num_batches), num_classes)
    kept = _greedy_nms(corners[batch_of_row[:, None], order], valid, max_boxes, iou_threshold)
    row, col = np.nonzero(kept)
    return [np.stack([row // num_classes, row % num_classes, order[row, col]], axis=1).astype(np.int64)]


def _stable_order(x: np.ndarray, largest: bool) -> np.ndarray:
    """Argsort along the last axis, best first; equal values keep ascending index order (ONNX's tie rule)."""
    if not largest:
        return np.argsort(x, axis=-1, kind="stable")
    # Sorting the reversed row ascending and reversing the result gives descending values with the
    # lower original index first among equals, for every dtype (no negation: unsigned ints, NaN).
    n = x.shape[-1]
    return n - 1 - np.argsort(x[..., ::-1], axis=-1, kind="stable")[..., ::-1]


def _top_k_last_axis(x: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """Indices of the ``k`` best values along the last axis, best first, ties by lower index."""
    n = x.shape[-1]
    if k >= n:
        return _stable_order(x, largest)
    # Partition first so only k candidates are sorted; a tie at the boundary value could let the
    # partition pick a higher index over a lower one, so fall back to a full stable sort then.
    cand = np.argpartition(x, n - k if largest else k - 1, axis=-1)
    cand = np.sort(cand[..., n - k :] if largest else cand[..., :k], axis=-1)
    values = np.take_along_axis(x, cand, axis=-1)
    boundary = values.min(axis=-1, keepdims=True) if largest else values.max(axis=-1, keepdims=True)
    if np.any((x == boundary).sum(axis=-1) != (values == boundary).sum(axis=-1)):
        return _stable_order(x, largest)[..., :k]
    return np.take_along_axis(cand, _stable_order(values, largest), axis=-1)


@register("TopK", cpu_only=True)
def top_k(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """The ``k`` largest (or smallest) values along ``axis`` and their int64 indices, sorted, ties by lower index."""
    x = inputs[0]
    k = int(inputs[1].reshape(-1)[0])
    axis = int(attrs.get("axis", -1)) % x.ndim
    largest = bool(attrs.get("largest", 1))
    moved = np.moveaxis(x, axis, -1)
    idx = _top_k_last_axis(moved, k, largest)[..., :k]
    values = np.take_along_axis(moved, idx, axis=-1)
    return [np.moveaxis(values, -1, axis).copy(), np.moveaxis(idx, -1, axis).astype(np.int64)]
