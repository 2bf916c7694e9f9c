"""Where a model's time goes on CUDA: end-to-end median (graph replay), per-node CUDA-event times grouped by kernel,
the slowest nodes with their configs and achieved GFLOP/s (issue 16's per-kernel profile).

    python benchmarks/cuda_profile.py MODEL.onnx|--resnet50 [--runs 200] [--top 15] [--json out.json]

Run it once per planner setting to compare them (e.g. ``EDGEINFER_GPU_CONV=direct``: planning/conv_gemm.py).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from common import random_feeds
from gpu_compare import median_ms, resnet50_onnx

from edgeinfer import Session
from edgeinfer.compiler import compile_model
from edgeinfer.pack import write_pack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--resnet50", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = resnet50_onnx(Path(tmp)) if args.resnet50 else args.model
        graph = compile_model(model)
        pack = Path(tmp) / "model.pack"
        write_pack(graph, pack)
        session = Session(pack, device=args.device)
        feeds = random_feeds(session.inputs)
        wall = median_ms(lambda: session.run(feeds), args.runs, 20)
        rows = session.profile(feeds, repeat=20)
    configs = {row["name"]: row for row in session.explain()}
    by_kernel: dict[str, float] = defaultdict(float)
    for row in rows:
        by_kernel[row["kernel"]] += row["time_ms"]
    device_ms = sum(t for k, t in by_kernel.items() if k != "numpy")
    setting = os.environ.get("EDGEINFER_GPU_CONV", "igemm")
    print(f"{model.stem} on {args.device} ({setting}): {wall:.3f} ms end to end, {device_ms:.3f} ms in kernels")
    for kernel, total in sorted(by_kernel.items(), key=lambda kv: -kv[1]):
        print(f"  {kernel:24s} {total:8.3f} ms")
    print(f"  slowest {args.top} nodes:")
    slowest = []
    for row in rows[: args.top]:
        config = configs.get(row["name"], {}).get("config", {})
        slowest.append({**row, "config": config})
        print(
            f"  {row['name'][:40]:40s} {row['kernel']:10s} {row['time_ms']:7.4f} ms {row['gflops']:8.1f} GFLOP/s "
            f"{row['gbps']:6.1f} GB/s {config}"
        )
    if args.json:
        summary = {"model": model.stem, "setting": setting, "wall_ms": wall, "device_ms": device_ms,
                   "by_kernel": by_kernel, "slowest": slowest}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
