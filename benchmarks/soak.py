"""Soak benchmark (issue 18): a camera loop for a long time, then several Sessions from several threads.

Phase 1, per backend: the loop of ``examples/camera.py`` (``Session.run(frame)``: pre-processing,
inference, post-processing) over a folder of frames, cycled, for ``--duration`` seconds. Each
``--window`` seconds it records the latency percentiles (p50/p90/p99/max) and the process RSS; at the
end it reports the RSS after warm-up and at the end (goal: within 5%) and the RSS trend over the windows
(least-squares slope, MiB per hour). Every frame's result is compared with that frame's first result, so a
drifting or corrupted run shows up as ``mismatches``.

Phase 2, per backend: ``--threads`` Sessions, one per thread, then one Session shared by all threads, run
the same frames for ``--thread-seconds``; results must equal the single-threaded ones (the thread-safety
contract: README, "Threads").

    flock /tmp/cpu.lock python benchmarks/soak.py --duration 3600 --window 60 --json benchmarks/results/soak.json

Short development run: ``--duration 60 --window 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import SHARED  # noqa: F401  (puts the checkout on sys.path)
from PIL import Image

import edgeinfer
from edgeinfer.pipelines import Detections

SUFFIXES = {".jpg", ".jpeg", ".png"}


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc; ru_maxrss elsewhere is a peak, not a level)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def load_frames(folder: Path, limit: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"no images in {folder}")
    frames = []
    for path in files:
        with Image.open(path) as im:
            frames.append(np.asarray(im.convert("RGB")))
    return frames


def summary(result: Any) -> Any:
    """A comparable digest of a result: labels and rounded scores, or rounded boxes."""
    if isinstance(result, Detections):
        return [([round(v, 1) for v in d.box], d.label, round(float(d.score), 3)) for d in result]
    return [(label, round(score, 4)) for label, score in result]


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "n": len(ms),
        **{f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)},
        "max": round(float(a.max()), 2),
    }


def camera_loop(pack: Path, device: str, frames: list[np.ndarray], duration: float, window: float) -> dict:
    sess = edgeinfer.Session(pack, device=device)
    reference = [summary(sess.run(f)) for f in frames]  # warm-up: first run of each frame
    for f in frames:
        sess.run(f)
    start_rss, windows, mismatches = rss_mib(), [], 0
    t_start = time.perf_counter()
    t_window, lat, i = t_start, [], 0
    while True:
        t0 = time.perf_counter()
        result = sess.run(frames[i % len(frames)])
        t1 = time.perf_counter()
        lat.append(1e3 * (t1 - t0))
        mismatches += summary(result) != reference[i % len(frames)]
        i += 1
        if t1 - t_window >= window:
            windows.append({"t": round(t1 - t_start, 1), **percentiles(lat), "rss_mib": round(rss_mib(), 1)})
            print(f"  {device} t={windows[-1]['t']:7.1f}s {windows[-1]}", flush=True)
            t_window, lat = t1, []
            if t1 - t_start >= duration:
                break
    t = np.array([w["t"] for w in windows]) / 3600
    rss = np.array([w["rss_mib"] for w in windows])
    slope = float(np.polyfit(t, rss, 1)[0]) if len(windows) > 2 else 0.0
    end_rss = rss_mib()
    return {
        "device": device,
        "backend": sess.backend,
        "frames_run": i,
        "mismatches": int(mismatches),
        "rss_start_mib": round(start_rss, 1),
        "rss_end_mib": round(end_rss, 1),
        "rss_change_pct": round(100 * (end_rss - start_rss) / start_rss, 2),
        "rss_slope_mib_per_hour": round(slope, 2),
        "windows": windows,
    }


def threaded(pack: Path, device: str, frames: list[np.ndarray], threads: int, seconds: float, shared: bool) -> dict:
    """``threads`` threads running frames for ``seconds``: own Sessions, or one shared Session."""
    first = edgeinfer.Session(pack, device=device)
    reference = [summary(first.run(f)) for f in frames]
    sessions = (
        [first] * threads if shared else [first] + [edgeinfer.Session(pack, device=device) for _ in range(threads - 1)]
    )
    counts, bad, errors = [0] * threads, [0] * threads, []
    deadline = time.perf_counter() + seconds

    def work(k: int) -> None:
        try:
            j = k
            while time.perf_counter() < deadline:
                bad[k] += summary(sessions[k].run(frames[j % len(frames)])) != reference[j % len(frames)]
                counts[k] += 1
                j += 1
        except Exception as e:  # reported, not raised: the other threads go on
            errors.append(repr(e))

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "device": device,
        "threads": threads,
        "shared_session": shared,
        "runs": sum(counts),
        "frames_per_s": round(sum(counts) / seconds, 2),
        "mismatches": sum(bad),
        "errors": errors[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", help="a .pack with an image pipeline (default: FastestDet compiled with its preset)")
    ap.add_argument("--frames", default=str(SHARED / "images"), help="folder of frames, cycled")
    ap.add_argument("--max-frames", type=int, default=8)
    ap.add_argument("--devices", nargs="+", default=["cpu", "opencl"])
    ap.add_argument("--duration", type=float, default=3600, help="seconds of camera loop per device")
    ap.add_argument("--window", type=float, default=60, help="seconds per latency/RSS window")
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--thread-seconds", type=float, default=30)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    frames = load_frames(Path(args.frames), args.max_frames)
    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(args.pack) if args.pack else _default_pack(Path(tmp))
        out: dict[str, Any] = {
            "pack": pack.name,
            "cpu": platform.processor() or platform.machine(),
            "avx512f": _avx512(),
            "commit": _commit(),
            "args": vars(args),
            "runs": [],
        }
        for device in args.devices:
            try:
                edgeinfer.Session(pack, device=device)
            except edgeinfer.DeviceError as e:
                print(f"{device}: skipped ({e})")
                continue
            print(f"{device}: camera loop {args.duration:.0f} s over {len(frames)} frames", flush=True)
            loop = camera_loop(pack, device, frames, args.duration, args.window)
            print({k: v for k, v in loop.items() if k != "windows"}, flush=True)
            out["runs"].append(loop)
            for shared in (False, True):
                t = threaded(pack, device, frames, args.threads, args.thread_seconds, shared)
                print(t, flush=True)
                out["runs"].append(t)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def _default_pack(tmp: Path) -> Path:
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack
    from edgeinfer.pipelines.config import default_labels, resolve_pipeline

    model = SHARED / "models" / "fastestdet_352.onnx"
    pipeline = resolve_pipeline("fastestdet")
    graph = compile_model(model, pipeline=pipeline)
    graph.metadata["labels"] = default_labels(pipeline, model) or []
    write_pack(graph, tmp / "fastestdet.pack")
    return tmp / "fastestdet.pack"


def _avx512() -> bool:
    return "avx512f" in Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else False


def _commit() -> str:
    head = Path(__file__).resolve().parent.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().split()[-1]
        return (head.parent / ref).read_text().strip()[:12] if ref.startswith("refs/") else ref[:12]
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
