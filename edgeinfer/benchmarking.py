"""Per-frame latency breakdown for ``edgeinfer bench --image``: pre-processing, inference, post-processing, NMS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.backends.numpy import run_node
from edgeinfer.errors import PipelineError


def _median_ms(times: list[float]) -> float:
    return float(np.median(times) * 1e3)


def _nms_inputs(sess: Any, feeds: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]] | None:
    """The NonMaxSuppression node of the pack and its inputs on this frame (computed with the NumPy ops)."""
    graph = sess.graph
    nms = next((n for n in graph.nodes if n.op == "NonMaxSuppression"), None)
    if nms is None:
        return None
    env: dict[str, np.ndarray] = dict(graph.constants)
    env.update(feeds)
    for node in graph.nodes:
        if node is nms:
            return nms, {name: env[name] for name in nms.inputs if name}
        run_node(node, env)
    return None


def frame_breakdown(sess: Any, image: str | Path, runs: int = 50, warmup: int = 5) -> dict[str, Any]:
    """Median milliseconds per frame stage on ``image`` (decoded once, as a camera frame would arrive).

    ``preprocess`` is the session's own path: device kernels on OpenCL and CUDA (where the PIL + NumPy time is
    reported too, for comparison), PIL + NumPy elsewhere. ``inference`` is the whole graph on the
    session's device, NMS included; ``nms`` is the NMS node alone on the NumPy fallback, to show what the
    CPU part of a detector costs.
    """
    from PIL import Image

    from edgeinfer.pipelines.preprocess import prepare_input

    if sess.pipeline is None:
        raise PipelineError(f"{sess.path} has no image pipeline; compile it with --preset or --pipeline")
    frame = np.asarray(Image.open(image).convert("RGB"))
    input_name = sess.pipeline["input"]
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": [], "total": []}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        tensor, context = sess.preprocess(frame)
        t1 = time.perf_counter()
        outputs = sess.run({input_name: tensor})
        t2 = time.perf_counter()
        result = sess.postprocess(outputs, context)
        t3 = time.perf_counter()
        if i >= warmup:
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                stages[key].append(dt)
    report: dict[str, Any] = {
        "pack": str(sess.path),
        "device": sess.device,
        "image": str(image),
        "frame": f"{frame.shape[1]}x{frame.shape[0]}",
        "runs": runs,
    }
    report.update({f"{key}_ms": _median_ms(times) for key, times in stages.items()})
    if sess._device_preprocessor is not None:  # the PIL/NumPy path, for comparison with the device kernels
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            prepare_input(frame, sess.pipeline)
            times.append(time.perf_counter() - t0)
        report["preprocess_pil_numpy_ms"] = _median_ms(times)
    found = _nms_inputs(sess, {input_name: tensor})
    if found:
        nms, env = found
        times = []
        for _ in range(runs):
            local = dict(env)
            t0 = time.perf_counter()
            run_node(nms, local)
            times.append(time.perf_counter() - t0)
        report["nms_ms"] = _median_ms(times)
    report["fps"] = 1e3 / report["total_ms"]
    report["result"] = str(result)[:200]
    return report
