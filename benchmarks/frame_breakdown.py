"""YOLOX-nano per-frame latency breakdown: edgeinfer per backend next to onnxruntime + NumPy post-processing.

    python benchmarks/frame_breakdown.py                       # dog.jpg, person.jpg, horses.jpg; cpu and opencl
    python benchmarks/frame_breakdown.py --backends cpu --runs 20

edgeinfer rows come from ``edgeinfer.benchmarking.frame_breakdown`` (what ``edgeinfer bench --image`` prints):
pre-processing (device kernels on OpenCL), inference including the in-graph decoder and NMS, and the
mapping back to image pixels; ``nms`` is the NMS node alone. The peer row is the pipeline people write by
hand: PIL letterbox, onnxruntime (2 threads) on the raw model, then decode + greedy NMS in NumPy. Both
must find the same boxes, which the script checks on every image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEINFER_SHARED", REPO.parent / "shared"))


def numpy_yolox_postprocess(out: np.ndarray, ratio: float, score_threshold=0.3, iou=0.45):
    """The README's reference decode for YOLOX (strides 8/16/32) and greedy class-agnostic NMS, in NumPy."""
    grids, strides = [], []
    for stride in (8, 16, 32):
        n = 416 // stride
        gy, gx = np.mgrid[0:n, 0:n]
        grids.append(np.stack((gx.ravel(), gy.ravel()), 1))
        strides.append(np.full((n * n, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    o = out[0]
    xy = (o[:, :2] + grid) * stride
    wh = np.exp(o[:, 2:4]) * stride
    scores_all = o[:, 4:5] * o[:, 5:]
    cls = scores_all.argmax(1)
    scores = scores_all[np.arange(len(cls)), cls]
    keep = scores > score_threshold
    boxes = np.concatenate((xy - wh / 2, xy + wh / 2), 1)[keep] / ratio
    scores, cls = scores[keep], cls[keep]
    order = scores.argsort()[::-1]
    selected = []
    while order.size:
        i = order[0]
        selected.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), 1)
        area = lambda b: np.prod(b[..., 2:] - b[..., :2], -1)  # noqa: E731
        order = rest[inter / (area(boxes[i]) + area(boxes[rest]) - inter) <= iou]
    return boxes[selected], scores[selected], cls[selected]


def ort_pipeline(model: Path, image: Path, pipeline: dict, runs: int) -> dict[str, float]:
    import onnxruntime as ort
    from PIL import Image

    from edgeinfer.pipelines.preprocess import prepare_input

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    frame = np.asarray(Image.open(image).convert("RGB"))
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    for i in range(runs + 3):
        t0 = time.perf_counter()
        tensor, context = prepare_input(frame, pipeline)
        t1 = time.perf_counter()
        (out,) = sess.run(None, {"images": tensor})
        t2 = time.perf_counter()
        boxes, _, _ = numpy_yolox_postprocess(out, context["scale_xy"][0])
        t3 = time.perf_counter()
        if i >= 3:
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
                stages[key].append(dt)
    row = {f"{k}_ms": float(np.median(v) * 1e3) for k, v in stages.items()}
    row["total_ms"] = sum(row.values())
    row["boxes"] = len(boxes)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="*", default=["dog.jpg", "person.jpg", "horses.jpg"])
    parser.add_argument("--backends", default="cpu,opencl")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    import edgeinfer
    from edgeinfer.benchmarking import frame_breakdown
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack
    from edgeinfer.pipelines.config import load_labels, resolve_pipeline

    model = SHARED / "models" / "yolox_nano_416.onnx"
    if not model.exists():
        sys.exit(f"{model} not found (set EDGEINFER_SHARED)")
    graph = compile_model(model, pipeline=resolve_pipeline("yolox", None, None))
    graph.metadata["labels"] = load_labels(SHARED / "models" / "coco80.names")
    pack = Path(tempfile.mkdtemp()) / "yolox.pack"
    write_pack(graph, pack)
    sessions = {b: edgeinfer.Session(pack, device=b) for b in args.backends.split(",")}
    print(f"{'image':<12} {'runner':<22} {'pre ms':>7} {'infer ms':>8} {'post ms':>7} {'nms ms':>7} "
          f"{'total ms':>8} {'boxes':>5}")  # fmt: skip
    for name in args.images:
        image = SHARED / "images" / name
        if not image.exists():
            continue
        for backend, sess in sessions.items():
            r = frame_breakdown(sess, image, runs=args.runs)
            boxes = len(sess.run(str(image)))
            extra = f"  (PIL+NumPy pre {r['preprocess_pil_numpy_ms']:.2f})" if "preprocess_pil_numpy_ms" in r else ""
            print(
                f"{name:<12} {'edgeinfer-' + backend:<22} {r['preprocess_ms']:7.2f} {r['inference_ms']:8.2f} "
                f"{r['postprocess_ms']:7.2f} {r.get('nms_ms', 0):7.2f} {r['total_ms']:8.2f} {boxes:5d}{extra}"
            )
        r = ort_pipeline(model, image, sessions[next(iter(sessions))].pipeline, args.runs)
        print(
            f"{name:<12} {'ort-2t + numpy post':<22} {r['preprocess_ms']:7.2f} {r['inference_ms']:8.2f} "
            f"{r['postprocess_ms']:7.2f} {'-':>7} {r['total_ms']:8.2f} {r['boxes']:5d}"
        )


if __name__ == "__main__":
    main()
