"""What the benchmark scripts share: where the real models are, seeded inputs, and the error measure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the scripts run from a checkout, installed or not
SHARED = Path(os.environ.get("EDGEINFER_SHARED", REPO.parent / "shared"))
SHARED_MODELS = [
    "mobilenet_v2_1.0_224.onnx",
    "squeezenet1.1.onnx",
    "yolox_nano_416.onnx",
    "mobilenet_v1_0.25_128.onnx",
    "fastestdet_352.onnx",
    "ultraface_rfb_320.onnx",
    "mobilenet_v2_1.0_224_qdq_uint8.onnx",
]


def random_feeds(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for tensors with ``name``, ``shape``, ``dtype``: pixels 0..255 for integer inputs, else
    uniform in [-1, 1] (never zeros: a benchmark on zeros can hide wrong kernels)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            feeds[spec.name] = rng.integers(0, 256, spec.shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.uniform(-1, 1, spec.shape).astype(spec.dtype)
    return feeds


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """Relative L2 error of ``actual`` against ``expected``, in float64."""
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))
