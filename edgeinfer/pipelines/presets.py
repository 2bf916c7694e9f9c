"""Built-in pipelines for the models in ``../shared/models`` (facts from its README).

A preset is a partial pipeline dict: ``input`` is left out (the compiler binds it to the model's first
input) and ``size`` is a default that a model with a static input size overrides (see
``config.bind_to_model``). ``labels_file`` names a labels file looked up next to the model.
"""

from __future__ import annotations

import copy
from typing import Any

from edgeinfer.errors import PipelineError

_IMAGENET_MOBILENET = {
    "task": "classification",
    "resize": "centre-crop",
    "channel_order": "RGB",
    "scale": 1.0,
    "mean": [127.5, 127.5, 127.5],
    "std": [127.5, 127.5, 127.5],
    "layout": "NCHW",
    "dtype": "float32",
    "top_k": 5,
    "softmax": False,  # the model ends in Softmax
    "labels_file": "imagenet1001_coral_with_background.txt",
}

PRESETS: dict[str, dict[str, Any]] = {
    "squeezenet": {
        "task": "classification",
        "size": [224, 224],
        "resize": "square-crop",
        "channel_order": "BGR",
        "scale": 1.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "layout": "NCHW",
        "dtype": "float32",
        "top_k": 5,
        "softmax": False,
        "labels_file": "imagenet1000_winml.txt",
    },
    "mobilenet": {**_IMAGENET_MOBILENET, "size": [224, 224]},
    "mobilenet_v1": {**_IMAGENET_MOBILENET, "size": [128, 128]},
    "mobilenet_qdq": {
        **_IMAGENET_MOBILENET,
        "size": [224, 224],
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "layout": "NHWC",
        "dtype": "uint8",
    },
    "yolox": {
        "task": "detection",
        "size": [416, 416],
        "resize": "letterbox-topleft",
        "pad_value": 114,
        "channel_order": "BGR",
        "scale": 1.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "layout": "NCHW",
        "dtype": "float32",
        # Rows: grids of each stride, row-major; o[0:4] = (dx, dy, log w, log h), o[4] objectness,
        # o[5:] class probabilities (the export already applied the sigmoids).
        "decoder": {"type": "yolox", "strides": [8, 16, 32], "score": "obj*cls"},
        "score_threshold": 0.3,
        "nms_iou": 0.45,
        "class_aware": False,
        "max_detections": 100,
        "labels_file": "coco80.names",
    },
    "fastestdet": {
        "task": "detection",
        "size": [352, 352],
        "resize": "plain",
        "channel_order": "BGR",
        "scale": 1.0 / 255.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "layout": "NCHW",
        "dtype": "float32",
        # One 22x22 grid, channels-first: d[0] obj, d[1:3] tanh offsets, d[3:5] sigmoid w/h, d[5:] classes.
        "decoder": {"type": "fastestdet", "obj_power": 0.6, "cls_power": 0.4},
        "score_threshold": 0.65,
        "nms_iou": 0.45,
        "class_aware": False,
        "max_detections": 100,
        "labels_file": "coco80.names",
    },
    "ultraface": {
        "task": "detection",
        "size": [240, 320],
        "resize": "plain",
        "channel_order": "RGB",
        "scale": 1.0,
        "mean": [127.0, 127.0, 127.0],
        "std": [128.0, 128.0, 128.0],
        "layout": "NCHW",
        "dtype": "float32",
        # Boxes already decoded to normalised x1y1x2y2; scores are softmax over (background, face).
        "decoder": {
            "type": "ssd",
            "scores_output": "scores",
            "boxes_output": "boxes",
            "box_format": "x1y1x2y2",
            "normalized": True,
            "background_class": 0,
        },
        "score_threshold": 0.7,
        "nms_iou": 0.3,
        "class_aware": False,
        "max_detections": 200,
        "labels": ["background", "face"],
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` (so callers may edit it)."""
    if name not in PRESETS:
        raise PipelineError(f"unknown pipeline preset {name!r}; expected one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
