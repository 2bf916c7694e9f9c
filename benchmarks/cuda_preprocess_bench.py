"""YOLOX-nano's ``Session.run(image)`` on CUDA end to end, with the frame pre-processed on the GPU (what run(image)
does on CUDA: a uint8 frame crosses PCIe) against the host path (PIL + NumPy, then the float tensor is uploaded),
alternating run by run so that clock drift hits both alike.

    python benchmarks/cuda_preprocess_bench.py [--runs 200] [--warmup 20] [--device cuda] [--json out.json]

(``--device opencl`` measures the same on OpenCL, whose run(image) pre-processes on the device too.)
Per frame (a shared photo as it is and resized to 640x480 and 1920x1080): the median wall time of each path, of
pre-processing alone (the GPU's written into the model's input region, stream synchronised; the host's
``prepare_input``), the bytes each path uploads, and whether both found the same detections (they must: the
tensors are bit-equal). Exit status 1 when they differ or a step fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED
from PIL import Image

from edgeinfer import Session
from edgeinfer.pipelines.preprocess import prepare_input

FRAME_SIZES = [(640, 480), (1920, 1080)]


def yolox_pack(folder: Path) -> Path:
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack
    from edgeinfer.pipelines.config import default_labels, resolve_pipeline

    model = SHARED / "models" / "yolox_nano_416.onnx"
    graph = compile_model(str(model), pipeline=resolve_pipeline("yolox"))
    graph.metadata["labels"] = default_labels(resolve_pipeline("yolox"), model)
    write_pack(graph, folder / "yolox.pack")
    return folder / "yolox.pack"


def frames(image: Path) -> dict[str, np.ndarray]:
    with Image.open(image) as im:
        rgb = im.convert("RGB")
        out = {f"{rgb.width}x{rgb.height} ({image.name})": np.asarray(rgb)}
        out.update({f"{w}x{h}": np.asarray(rgb.resize((w, h), Image.BILINEAR)) for w, h in FRAME_SIZES})
    return out


def bench(session: Session, frame: np.ndarray, runs: int, warmup: int) -> dict:
    name = session.pipeline["input"]
    region = session._executable.device_input(name)
    if region is None or session._device_preprocessor is None:
        raise RuntimeError(f"Session.run(image) does not pre-process on the device on {session.backend}")
    pre = session._device_preprocessor
    wait = pre.stream.synchronize if hasattr(pre, "stream") else pre.queue.finish  # CUDA, or OpenCL for comparison

    def host_path():
        tensor, context = prepare_input(frame, session.pipeline)
        return session.postprocess(session.run({name: tensor}), context)

    def device_only():
        pre.run(frame, out=region)
        wait()

    columns = {"device_path": lambda: session.run(frame), "host_path": host_path, "device_preprocess": device_only,
               "host_preprocess": lambda: prepare_input(frame, session.pipeline)}  # fmt: skip
    times: dict[str, list[float]] = {key: [] for key in columns}
    for i in range(warmup + runs):
        for key, fn in columns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[key].append((time.perf_counter() - start) * 1e3)
    device, host = session.run(frame), host_path()
    same = np.array_equal(device.boxes, host.boxes) and np.array_equal(device.scores, host.scores)
    result = {f"{key}_ms": round(statistics.median(v), 4) for key, v in times.items()}
    tensor_bytes = int(np.prod(session.inputs[0].shape)) * np.dtype(session.inputs[0].dtype).itemsize
    result.update(upload_device_bytes=frame.nbytes, upload_host_bytes=tensor_bytes, detections=len(device),
                  same_detections=same)  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image", type=Path, default=SHARED / "images" / "dog.jpg")
    parser.add_argument("--pack", type=Path, help="a YOLOX pack (default: compiled from the shared model)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            session = Session(args.pack or yolox_pack(Path(tmp)), device=args.device)
        except Exception as e:  # noqa: BLE001 - say why in one line rather than a traceback
            print(f"cannot load YOLOX on {args.device}: {type(e).__name__}: {e}")
            return 1
        print(f"YOLOX-nano on {session.device} ({session.backend}); median of {args.runs} runs after {args.warmup}")
        header = ("frame", "run(image) device ms", "run(image) host ms", "pre-process device ms", "host ms",
                  "uploads device / host", "same detections")  # fmt: skip
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        table, ok = {}, True
        for label, frame in frames(args.image).items():
            try:
                r = table[label] = bench(session, frame, args.runs, args.warmup)
            except Exception as e:  # noqa: BLE001 - one failed frame is a row, not the end of the table
                table[label], ok = {"error": f"{type(e).__name__}: {e}"}, False
                print(f"| {label} | failed: {type(e).__name__}: {' '.join(str(e).split())[:200]} |", flush=True)
                continue
            ok &= r["same_detections"]
            uploads = f"{r['upload_device_bytes'] / 1e6:.2f} / {r['upload_host_bytes'] / 1e6:.2f} MB"
            times = [f"{r[key]:.3f}" for key in ("device_path_ms", "host_path_ms", "device_preprocess_ms",
                                                 "host_preprocess_ms")]  # fmt: skip
            cells = [label, *times, uploads, "yes" if r["same_detections"] else "NO"]
            print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": session.device, "runs": args.runs, "table": table}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
