"""Image pipelines: pre-processing, detection decoding, post-processing, results and presets.

Run-time modules (``preprocess``, ``postprocess``, ``results``, ``config``, ``presets``) need only numpy
and pillow. ``decode_graph`` appends the decoder and NMS to an ONNX model at compile time and is the
only module here that imports onnx; it is not imported by this package.
"""

from edgeinfer.errors import PipelineError
from edgeinfer.pipelines.config import bind_to_model, load_labels, resolve_pipeline
from edgeinfer.pipelines.postprocess import finish
from edgeinfer.pipelines.preprocess import load_image, prepare_input
from edgeinfer.pipelines.results import Detection, Detections, draw_detections

__all__ = [
    "Detection",
    "Detections",
    "PipelineError",
    "bind_to_model",
    "draw_detections",
    "finish",
    "load_image",
    "load_labels",
    "prepare_input",
    "resolve_pipeline",
]
