"""Run-time finishing of a model's outputs: top-k labels, or detections in original-image pixels.

Decoding and NMS already ran inside the graph (``decode_graph``); what is left here is cheap host
work that needs the per-image context from ``preprocess.prepare_input``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeinfer.errors import PipelineError
from edgeinfer.pipelines.results import DET_BOXES, DET_CLASSES, DET_SCORES, Detections


def finish(
    outputs: dict[str, np.ndarray], pipeline: dict[str, Any], labels: Sequence[str], context: dict[str, Any]
) -> list[tuple[str, float]] | Detections:
    """Top-k ``(label, score)`` pairs for a classifier, :class:`Detections` for a detector."""
    if pipeline["task"] == "classification":
        return top_k(outputs, pipeline, labels)
    return detections_in_image(outputs, labels, context)


def top_k(outputs: dict[str, np.ndarray], pipeline: dict[str, Any], labels: Sequence[str]) -> list[tuple[str, float]]:
    """The ``top_k`` best classes of the classifier's score output, highest first."""
    name = pipeline.get("output") or next(iter(outputs))
    if name not in outputs:
        raise PipelineError(f"pipeline output {name!r} is not among the model outputs {list(outputs)}")
    raw = outputs[name].reshape(-1)
    scores = raw.astype(np.float64)
    if pipeline.get("output_scale") is not None:
        scores = (scores - pipeline.get("output_zero_point", 0)) * pipeline["output_scale"]
    if pipeline.get("softmax"):
        e = np.exp(scores - scores.max())
        scores = e / e.sum()
    k = min(int(pipeline.get("top_k", 5)), scores.size)
    best = np.argsort(-scores, kind="stable")[:k]  # equal scores (common with uint8 outputs): lower index first
    return [(labels[i] if i < len(labels) else str(i), float(scores[i])) for i in best]


def detections_in_image(outputs: dict[str, np.ndarray], labels: Sequence[str], context: dict[str, Any]) -> Detections:
    """Map the graph's decoded boxes from network-input pixels back to original-image pixels."""
    missing = [n for n in (DET_BOXES, DET_SCORES, DET_CLASSES) if n not in outputs]
    if missing:
        raise PipelineError(
            f"detection pack lacks the decoded outputs {missing} (it has {list(outputs)}); compile it with a "
            "detection preset or pipeline so that the decoder and NMS are appended to the graph"
        )
    boxes = outputs[DET_BOXES].reshape(-1, 4).astype(np.float32)
    sx, sy = context["scale_xy"]
    ox, oy = context["offset_xy"]
    boxes = (boxes - np.array([ox, oy, ox, oy], np.float32)) / np.array([sx, sy, sx, sy], np.float32)
    return Detections(boxes, outputs[DET_SCORES], outputs[DET_CLASSES], labels)
