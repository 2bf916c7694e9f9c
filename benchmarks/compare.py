"""Compare edgeinfer backends with onnxruntime on the shared models, in one process, alternating.

    python benchmarks/compare.py                       # NumPy backend (native kernels, pure NumPy), OpenCL vs ORT
    python benchmarks/compare.py --backends cpu --models squeezenet1.1.onnx --runs 50
    python benchmarks/compare.py --markdown            # a table to paste into benchmarks/RESULTS.md

Each round runs every contender for a block of runs on the same seeded input, so drift on a shared
machine hits all of them alike; medians over all runs are reported with ratios to onnxruntime with 2
threads. Blocks, and a pause between contenders, keep the spinning worker threads of onnxruntime and OpenBLAS (they
busy-wait for a while after each run) from stealing the cores of the contender that follows. The first runs of a
block come right after that pause; ``--block-warmup N`` puts N untimed runs before each block's timed runs. Outputs
are checked against onnxruntime in the same run (relative L2 error), so a fast wrong answer shows.
``--gap-ms G`` times a camera loop instead: every timed run starts G ms after the previous one ended, so each
contender meets its own wake-up cost on every frame (25 ms: a 30-40 fps camera script).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import REPO, SHARED, SHARED_MODELS, random_feeds, rel_l2  # noqa: E402


def ort_session(model: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def bench_model(
    model: Path, backends: list[str], runs: int, warmup: int, block_warmup: int = 0, gap_ms: float = 0.0
) -> list[dict]:
    import edgeinfer
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack

    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(tmp) / (model.stem + ".pack")
        write_pack(compile_model(model), pack)
        sessions = {}
        for name in backends:
            try:
                sessions[name] = edgeinfer.Session(pack, device=name)
            except edgeinfer.EdgeInferError as e:
                print(f"  skip {name}: {e}", file=sys.stderr)
    first = next(iter(sessions.values()))
    feeds = random_feeds(first.inputs)
    contenders: dict[str, Callable[[], dict[str, np.ndarray]]] = {}
    for threads in (1, 2):
        sess = ort_session(model, threads)
        contenders[f"ort-{threads}t"] = lambda s=sess: dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))
    for name, sess in sessions.items():
        contenders[f"edgeinfer-{name}"] = lambda s=sess: s.run(feeds)
    reference = contenders["ort-2t"]()
    errors = {}
    for label, fn in contenders.items():
        out = fn()
        errors[label] = max(rel_l2(out[k], reference[k]) for k in reference)
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {label: [] for label in contenders}
    block = 10
    for _ in range(max(1, runs // block)):
        for label, fn in contenders.items():
            time.sleep(0.3)  # OpenBLAS and onnxruntime worker threads spin for up to ~0.1 s after work
            for _ in range(block_warmup):  # untimed: the block then measures warm latency, not the wake-up
                fn()
            for _ in range(block):
                if gap_ms:
                    time.sleep(gap_ms / 1e3)
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
    base = float(np.median(times["ort-2t"]))
    rows = []
    for label in contenders:
        median = float(np.median(times[label]))
        rows.append(
            {
                "model": model.name,
                "runner": label,
                "median_ms": median * 1e3,
                "p90_ms": float(np.percentile(times[label], 90)) * 1e3,
                "vs_ort_2t": median / base,
                "rel_l2_vs_ort": errors[label],
            }
        )
    return rows


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=SHARED_MODELS)
    p.add_argument("--backends", default="cpu,cpu:numpy,opencl", help="comma-separated edgeinfer devices")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--block-warmup",
        type=int,
        default=0,
        help="untimed runs after each pause, before the block's timed runs (default 0: the first runs "
        "after 0.3 s idle count; on the 2-core VM PoCL stays slow for tens of ms after idle)",
    )
    p.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="idle time before every timed run, as in a camera loop (default 0: back to back)",
    )
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    rows = []
    for name in args.models:
        model = SHARED / "models" / name
        if not model.exists():
            print(f"skip {name}: not found under {SHARED / 'models'}", file=sys.stderr)
            continue
        rows.extend(
            bench_model(model, args.backends.split(","), args.runs, args.warmup, args.block_warmup, args.gap_ms)
        )
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}, commit {git_commit()}, {args.runs} runs each"
        + (f", {args.gap_ms:g} ms idle before each run" if args.gap_ms else "")
    )
    if args.markdown:
        print("| model | runner | median ms | p90 ms | x ORT 2t | rel L2 vs ORT |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['model']} | {r['runner']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                f"{r['vs_ort_2t']:.2f} | {r['rel_l2_vs_ort']:.1e} |"
            )
    else:
        print(f"{'model':<38} {'runner':<18} {'median ms':>10} {'p90 ms':>8} {'x ORT2t':>8} {'relL2':>9}")
        for r in rows:
            print(
                f"{r['model']:<38} {r['runner']:<18} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} "
                f"{r['vs_ort_2t']:8.2f} {r['rel_l2_vs_ort']:9.1e}"
            )


if __name__ == "__main__":
    main()
