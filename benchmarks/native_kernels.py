"""Per-layer times of the NumPy backend's Conv with and without its native kernels, in one process.

    python benchmarks/native_kernels.py            # MobileNetV2's depthwise layers, + bias + ReLU6
    python benchmarks/native_kernels.py --runs 200

Each row runs the fused Conv op as the NumPy backend does (channels-last input, constant-weight cache)
with ``native_kernels`` off (NumPy: one einsum pass per tap, then bias and Clip passes) and on (the C
kernel of ``kernels/cpu/conv_hwc.c``), alternating, and checks that both give the same result.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgeinfer.ops import OPS, native_kernels

# MobileNetV2 1.0 at 224x224: (channels, input size, stride) of its depthwise 3x3 layers, with repeats
MOBILENET_V2_DEPTHWISE = [(32, 112, 1, 1), (96, 112, 2, 1), (144, 56, 1, 1), (144, 56, 2, 1), (192, 28, 1, 2),
                          (192, 28, 2, 1), (384, 14, 1, 3), (384, 14, 1, 1), (576, 14, 1, 2), (576, 14, 2, 1),
                          (960, 7, 1, 3)]  # fmt: skip


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100)
    args = p.parse_args()
    if not native_kernels.available():
        raise SystemExit(f"native kernels: {native_kernels.status()}")
    rng = np.random.default_rng(0)
    print(f"{'layer':24s} {'numpy ms':>9s} {'native ms':>9s} {'speed-up':>8s} {'G taps/s':>8s}  max |diff|")
    totals = [0.0, 0.0]
    for c, size, stride, repeats in MOBILENET_V2_DEPTHWISE:
        x = np.ascontiguousarray(rng.standard_normal((1, size, size, c), dtype=np.float32)).transpose(0, 3, 1, 2)
        w = rng.standard_normal((c, 1, 3, 3), dtype=np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        attrs = {"group": c, "strides": [stride, stride], "pads": [1, 1, 1, 1], "kernel_shape": [3, 3],
                 "activation": "clip", "activation_params": [0.0, 6.0], "channels_last": True}  # fmt: skip
        runners = [{**attrs, "native_kernels": native, "packed_weights": {}} for native in (False, True)]
        results = [OPS["Conv"].fn([x, w, b], a)[0] for a in runners]
        times = [0.0, 0.0]
        for _ in range(5):  # alternate in rounds so that drift hits both alike
            for k, a in enumerate(runners):
                inputs = [x, w, b]
                times[k] += median_ms(lambda a=a, i=inputs: OPS["Conv"].fn(i, a), max(1, args.runs // 5)) / 5
        taps = results[1].size * 9
        diff = float(np.abs(results[0] - results[1]).max())
        name = f"{c}ch {size}x{size} s{stride}" + (f" (x{repeats})" if repeats > 1 else "")
        print(f"{name:24s} {times[0]:9.3f} {times[1]:9.3f} {times[0] / times[1]:7.1f}x "
              f"{taps / times[1] / 1e6:8.1f}  {diff:.1e}")  # fmt: skip
        totals = [t + repeats * s for t, s in zip(totals, times)]
    print(f"{'all 17 layers':24s} {totals[0]:9.3f} {totals[1]:9.3f} {totals[0] / totals[1]:7.1f}x")


if __name__ == "__main__":
    main()
