"""Pre-processing per preset: CPU (PIL resize + NumPy, ``prepare_input``) against the OpenCL device
(``DevicePreprocessor``), on a 640x480 and a 1920x1080 frame, in one process, alternating run by run.

Device columns: ``device->host`` is ``run(frame)`` (upload, two kernels, read the tensor back: what a Session
gets when it feeds the executable a host array); ``device-resident`` writes into a device buffer and waits
for the queue (what it gets when the tensor stays on the device as the model's input). Every run checks
that the device tensor equals the CPU one. Usage::

    python benchmarks/preprocess_bench.py [--runs 30] [--device opencl] [--image photo.jpg] [preset ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pyopencl as cl
from PIL import Image

from edgeinfer.backends.opencl.preprocess import DevicePreprocessor
from edgeinfer.pipelines.config import resolve_pipeline
from edgeinfer.pipelines.preprocess import prepare_input
from edgeinfer.pipelines.presets import PRESETS

SHARED = Path(os.environ.get("EDGEINFER_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
FRAME_SIZES = [(640, 480), (1920, 1080)]


def frames(image: Path | None) -> dict[str, np.ndarray]:
    """Camera-like frames: a photo resized to each size (random pixels when there is no photo)."""
    if image is None:
        candidates = sorted((SHARED / "images").glob("*.jpg"))
        image = candidates[0] if candidates else None
    out = {}
    for w, h in FRAME_SIZES:
        if image is not None:
            with Image.open(image) as im:
                out[f"{w}x{h}"] = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR))
        else:
            out[f"{w}x{h}"] = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return out


def bench(preset: str, frame: np.ndarray, device: str | None, runs: int) -> dict[str, float]:
    pipeline = resolve_pipeline(preset)
    pre = DevicePreprocessor.for_device(device, pipeline)
    buffer = cl.Buffer(pre.context, cl.mem_flags.READ_WRITE, pre.nbytes)
    expected, _ = prepare_input(frame, pipeline)
    start = time.perf_counter()
    pre.run(frame)  # first frame of this size: weight tables built and uploaded
    first_ms = (time.perf_counter() - start) * 1e3
    times: dict[str, list[float]] = {"cpu": [], "device->host": [], "device-resident": []}
    mismatches = 0
    for _ in range(runs):  # alternate so that clock and cache drift hit every column alike
        t0 = time.perf_counter()
        expected, _ = prepare_input(frame, pipeline)
        t1 = time.perf_counter()
        actual, _ = pre.run(frame)
        t2 = time.perf_counter()
        pre.run(frame, out=buffer)
        pre.queue.finish()
        t3 = time.perf_counter()
        mismatches += not np.array_equal(actual, expected)
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(dt * 1e3)
    result = {key: statistics.median(v) for key, v in times.items()}
    result["first_ms"] = first_ms
    result["max_diff"] = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    result["mismatches"] = mismatches
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", default=sorted(PRESETS))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--device", default=None, help='"opencl" (default: best usable) or "opencl:P:D"')
    parser.add_argument("--image", type=Path, default=None, help="photo to resize into the frames")
    args = parser.parse_args()
    pre = DevicePreprocessor.for_device(args.device, resolve_pipeline(args.presets[0]))
    print(f"device: {pre.queue.device.name.strip()} ({pre.queue.device.platform.name}); runs: {args.runs}")
    header = ("preset", "frame", "cpu ms", "device->host ms", "resident ms", "speed-up", "1st frame ms", "equal")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for preset in args.presets:
        for name, frame in frames(args.image).items():
            r = bench(preset, frame, args.device, args.runs)
            equal = "yes" if r["mismatches"] == 0 else f"NO ({r['mismatches']}, max {r['max_diff']:g})"
            print(
                f"| {preset} | {name} | {r['cpu']:.2f} | {r['device->host']:.2f} | {r['device-resident']:.2f} | "
                f"{r['cpu'] / r['device->host']:.2f}x | {r['first_ms']:.1f} | {equal} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
