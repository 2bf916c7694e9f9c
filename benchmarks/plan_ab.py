"""Two plans of one pack on one device, timed in one process, interleaved (A B B A ...), so drift on a shared
machine hits both alike: the way to tell a planning rule's 4% from noise.

    python benchmarks/plan_ab.py model.pack layout.SEPARABLE_MAX_BLOCKS 16 4 --runs 200
    python benchmarks/plan_ab.py model.pack EDGEINFER_GPU_CONV direct gemm --device opencl

SETTING is a module attribute of ``edgeinfer.planning`` (``layout.SEPARABLE_MAX_BLOCKS``, set as an int) or an
environment variable; each Session is planned with its value (planning happens when the Session is made). Prints
both medians, their ratio, and the largest output difference between the two.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edgeinfer  # noqa: E402


def planned_with(pack: str, device: str, setting: str, value: str) -> edgeinfer.Session:
    if "." in setting:
        module, attribute = setting.rsplit(".", 1)
        target = importlib.import_module(f"edgeinfer.planning.{module}")
        setattr(target, attribute, type(getattr(target, attribute))(value))
    else:
        os.environ[setting] = value
    return edgeinfer.Session(pack, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pack")
    parser.add_argument("setting")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    sessions = {value: planned_with(args.pack, args.device, args.setting, value) for value in (args.a, args.b)}
    spec = sessions[args.a].inputs[0]
    feeds = {spec.name: np.random.default_rng(0).random(spec.shape, dtype=np.float32)}
    outputs = {value: session.run(feeds) for value, session in sessions.items()}
    difference = max(float(np.max(np.abs(np.asarray(outputs[args.a][k]) - np.asarray(outputs[args.b][k]))))
                     for k in outputs[args.a])  # fmt: skip
    for session in sessions.values():  # warm-up
        for _ in range(5):
            session.run(feeds)
    times: dict[str, list[float]] = {args.a: [], args.b: []}
    for i in range(args.runs):
        for value in (args.a, args.b) if i % 2 == 0 else (args.b, args.a):
            start = time.perf_counter()
            sessions[value].run(feeds)
            times[value].append((time.perf_counter() - start) * 1e3)
    medians = {value: statistics.median(t) for value, t in times.items()}
    for value, median in medians.items():
        print(f"{args.setting}={value}: median {median:.3f} ms, p10 {np.percentile(times[value], 10):.3f} ms")
    print(f"ratio b/a: {medians[args.b] / medians[args.a]:.3f}; largest output difference {difference:.3g}")


if __name__ == "__main__":
    main()
