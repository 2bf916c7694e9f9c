"""What the benchmark scripts share: where the real models are, seeded inputs, and the error measure."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
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


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    """The median wall time of ``runs`` calls of ``fn`` after ``warmup`` calls, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def short_error(e: Exception) -> str:
    """``Type: message`` on one line, cut to 160 characters: a table cell, not a traceback."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
