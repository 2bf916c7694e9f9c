"""The ``edgeinfer`` command: compile, run, info, bench, tune, prepare, devices."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.backends.base import DeviceInfo
from edgeinfer.errors import EdgeInferError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (EdgeInferError, ValueError, FileNotFoundError) as e:
        print(f"edgeinfer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (``edgeinfer devices | head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail
        return 141


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeinfer", description="Compile ONNX CNNs to .pack files and run them.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile an ONNX model into a .pack (needs onnx)")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("-o", "--output", required=True, help="output .pack file")
    c.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=1x3xHxW",
        help="fix the dynamic dims of an input (repeatable)",
    )
    c.add_argument("--preset", help="pre/post-processing preset (squeezenet, mobilenet, yolox, fastestdet, ...)")
    c.add_argument("--pipeline", help="pipeline file (JSON or TOML) that sets or tunes pre/post-processing")
    c.add_argument(
        "--preprocess",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one pipeline key, e.g. resize=square-crop, channel_order=BGR, mean=0,0,0",
    )
    c.add_argument("--labels", help="class labels file (one per line, or idx,name)")
    c.add_argument("--no-optimize", action="store_true", help="skip folding and fusion passes")
    c.add_argument("--fp16", action="store_true",
                   help="fp16 pack: weights stored as half (half the file); GPUs store every tensor as half and "
                        "compute in float")  # fmt: skip
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", help="run a pack on images (or a .npy input) and print the results")
    r.add_argument("pack")
    r.add_argument("inputs", nargs="+", help="image files, or .npy files for packs without a pipeline")
    r.add_argument("--device", default="auto")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--wait", action="store_true",
                   help="on a first run, wait for the OpenCL build (else it goes on in the background)")  # fmt: skip
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="show a pack's inputs, ops, placement, memory plan and FLOPs")
    i.add_argument("pack")
    i.add_argument("--device", help="also prepare on DEVICE and show each node's kernel and config")
    i.add_argument("--nodes", action="store_true", help="list every node")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="time a pack: median and p90 latency")
    b.add_argument("pack")
    b.add_argument("--device", default="auto")
    b.add_argument("-n", "--runs", type=int, default=50)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--image", help="time whole frames (pre-process, inference, post-process) on this image")
    b.add_argument("--profile", action="store_true", help="per-node times, slowest first (OpenCL profiling events)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("tune", help="tune kernel knobs for a device (learned cost model); writes a tuned table")
    t.add_argument("packs", nargs="+", metavar="PACK", help="packs whose workloads to tune")
    t.add_argument("--device", default="opencl", help="OpenCL or CUDA device (opencl, opencl:P:D, cuda, cuda:N)")
    t.add_argument("--trials", type=int, default=24, help="configs measured per workload (default 24)")
    t.add_argument("--time-budget", type=float, metavar="S", help="stop after S seconds, keeping what was tuned")
    t.add_argument("--out", type=Path, help="table to write (default: the device's table in the user data dir)")
    t.add_argument("--records", type=Path, help="measurement log (default: beside the table); a rerun resumes")
    t.add_argument("--templates", help="comma-separated templates to tune (default: all)")
    t.add_argument("--search", choices=("model", "random"), default="model", help="cost-model search or random")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--repeat", type=int, default=10, help="timed runs per config (median)")
    t.add_argument("--report", action="store_true", help="only show how each workload is covered by the tables")
    t.set_defaults(func=cmd_tune)

    pr = sub.add_parser("prepare", help="build a pack's OpenCL programs into the cache ahead of its first run")
    pr.add_argument("packs", nargs="+", metavar="PACK")
    pr.add_argument("--device", default="opencl", help="OpenCL device (opencl or opencl:P:D)")
    pr.add_argument("--check", action="store_true", help="only say how many of the programs are cached")
    pr.add_argument("--low-priority", action="store_true", help="run at the lowest CPU priority (nice 19)")
    pr.add_argument("--binaries-later", action="store_true",
                    help="PoCL: markers only, binaries left to a niced child (a first run's build)")  # fmt: skip
    pr.set_defaults(func=cmd_prepare)

    d = sub.add_parser("devices", help="list backends and devices, with the reason one is unavailable")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_devices)
    return p


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.lower().split("x"))
        if min(shape) < 1:  # a zero or negative dim compiles to a pack that can never run an image
            raise ValueError
        return name, shape
    except ValueError:
        raise ValueError(f"--input-shape expects NAME=1x3x224x224 with positive integer dims, got {text!r}") from None


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [_parse_value(t) for t in text.split(",")]
    return text


def cmd_compile(args: argparse.Namespace) -> None:
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack
    from edgeinfer.pipelines.config import default_labels, load_labels, resolve_pipeline

    overrides = {}
    for item in args.preprocess:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--preprocess expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value.strip())
    pipeline = None
    if args.preset or args.pipeline or overrides:
        pipeline = resolve_pipeline(args.preset, args.pipeline, overrides)
    t0 = time.perf_counter()
    graph = compile_model(
        args.model,
        dict(map(_parse_shape, args.input_shape)) or None,
        optimize=not args.no_optimize,
        pipeline=pipeline,
        fp16=args.fp16,
    )
    labels = load_labels(args.labels) if args.labels else default_labels(pipeline or {}, args.model)
    if labels:
        graph.metadata["labels"] = labels
    write_pack(graph, args.output)
    plan = graph.memory_plan
    print(
        f"compiled {args.model} -> {args.output} in {time.perf_counter() - t0:.1f} s: {len(graph.nodes)} nodes, "
        f"{graph.metadata.get('flops', 0) / 1e9:.2f} GFLOP, arena {plan.arena_bytes / 2**20:.1f} MiB "
        f"(naive {plan.naive_bytes / 2**20:.1f} MiB)"
    )


def _load_input(sess: Any, path: str) -> Any:
    if path.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
        return {sess.inputs[0].name: array}
    return path


def _result_to_json(result: Any) -> Any:
    if isinstance(result, dict):
        return {
            k: {"shape": list(v.shape), "dtype": str(v.dtype), "values": v.ravel()[:10].tolist()}
            for k, v in result.items()
        }
    if hasattr(result, "to_list"):
        return result.to_list()
    return [[label, float(score)] for label, score in result]


def _print_result(path: str, result: Any) -> None:
    print(path)
    if isinstance(result, dict):
        for name, value in result.items():
            print(f"  {name}: shape {list(value.shape)} {value.dtype}, first values {value.ravel()[:5]}")
    elif hasattr(result, "boxes"):
        if len(result) == 0:
            print("  no detections")
        for det in result:
            box = ", ".join(f"{v:.0f}" for v in det.box)
            print(f"  {det.label:<20} {det.score:.3f}  [{box}]")
    else:
        for label, score in result:
            print(f"  {score:.4f}  {label}")


def cmd_run(args: argparse.Namespace) -> None:
    from edgeinfer.session import Session

    sess = Session(args.pack, device=args.device)
    results = {}
    for path in args.inputs:
        result = sess.run(_load_input(sess, path))
        results[path] = result
        if not args.json:
            _print_result(path, result)
    if args.json:
        print(json.dumps({p: _result_to_json(r) for p, r in results.items()}, indent=1))
    # A first run answered from NumPy while OpenCL builds (Session): the build process goes on after this one exits
    # (the command does not hang around for it), so that the next run loads warm; --wait waits for it instead.
    if sess.wait_until_ready(timeout=0):
        return
    sys.stdout.flush()
    if args.wait:
        print(f"edgeinfer: finishing the OpenCL build for later runs ({sess.backend_status})", file=sys.stderr,
              flush=True)  # fmt: skip
        sess.wait_until_ready()
    elif sess.detach_background_build():
        from edgeinfer.backends.opencl import program_cache

        if program_cache.PROGRESS.mode() != "off":
            print(f"edgeinfer: the OpenCL build goes on in the background for later runs (cached in"
                  f" {program_cache.cache_dir()})", file=sys.stderr, flush=True)  # fmt: skip


def cmd_info(args: argparse.Namespace) -> None:
    from edgeinfer.pack import read_pack

    graph = read_pack(args.pack)
    meta = graph.metadata
    print(
        f"{args.pack}: source {meta.get('source_name', '?')} (sha256 {str(meta.get('source_sha256', '?'))[:12]}), "
        f"opset {meta.get('opset', '?')}"
    )
    for kind, names in (("input", graph.inputs), ("output", graph.outputs)):
        for name in names:
            t = graph.tensors[name]
            print(f"  {kind:<6} {name} [{'x'.join(map(str, t.shape))}] {t.dtype}{' (dynamic)' if t.dynamic else ''}")
    ops = Counter(n.op for n in graph.nodes)
    print(f"nodes: {len(graph.nodes)}  ops: " + ", ".join(f"{op} {k}" for op, k in ops.most_common()))
    placement = Counter(n.placement for n in graph.nodes)
    print("placement: " + ", ".join(f"{p} {k}" for p, k in sorted(placement.items())))
    weights = sum(a.nbytes for a in graph.constants.values())
    plan = graph.memory_plan
    print(f"weights: {weights / 2**20:.2f} MiB in {len(graph.constants)} constants")
    print(
        f"memory plan: arena {plan.arena_bytes / 2**20:.2f} MiB for {len(plan.offsets)} intermediates "
        f"(naive sum {plan.naive_bytes / 2**20:.2f} MiB)"
    )
    print(f"FLOPs: {meta.get('flops', 0) / 1e9:.3f} GFLOP")
    if meta.get("pipeline"):
        print(f"pipeline: {json.dumps(meta['pipeline'])}")
    if meta.get("labels"):
        print(f"labels: {len(meta['labels'])} ({' | '.join(meta['labels'][:3])} | ...)")
    node_flops = meta.get("node_flops", {})
    if args.nodes:
        for n in graph.nodes:
            shape = "x".join(map(str, graph.tensors[n.outputs[0]].shape)) if n.outputs[0] in graph.tensors else "?"
            print(
                f"  {n.name:<40} {n.op:<18} {shape:<16} {n.placement:<6} {node_flops.get(n.name, 0) / 1e6:9.2f} MFLOP"
            )
    if args.device:
        from edgeinfer.session import Session

        sess = Session(args.pack, device=args.device)
        print(f"prepared on {sess.device} ({sess.backend_status}):")
        for row in sess.explain():
            print(
                f"  {row['name']:<40} {row['op']:<18} {row['placement']:<6} {row['kernel']:<24} "
                f"{row['config_source']:<10} {json.dumps(row['config'])}"
            )


def _latency_stats(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "min_ms": float(ms.min()),
        "runs": len(ms),
    }


def _random_feeds(sess: Any, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in sess.inputs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            feeds[spec.name] = rng.integers(0, 256, spec.shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return feeds


def cmd_bench(args: argparse.Namespace) -> None:
    from edgeinfer.session import Session

    sess = Session(args.pack, device=args.device)
    if args.image:
        from edgeinfer.benchmarking import frame_breakdown

        report = frame_breakdown(sess, args.image, runs=args.runs, warmup=args.warmup)
    elif args.profile:
        rows = sess.profile(_random_feeds(sess), repeat=args.runs)
        report = {"device": sess.device, "nodes": rows}
        if not args.json:
            print(f"{'node':<40} {'op':<16} {'kernel':<22} {'ms':>8} {'GFLOP/s':>8} {'GB/s':>7} {'share':>6}")
            for row in sorted(rows, key=lambda r: -r["time_ms"]):
                print(
                    f"{row['name']:<40} {row['op']:<16} {row.get('kernel', ''):<22} {row['time_ms']:8.3f} "
                    f"{row.get('gflops', 0):8.1f} {row.get('gbps', 0):7.1f} {row.get('share', 0) * 100:5.1f}%"
                )
            return
    else:
        feeds = _random_feeds(sess)
        for _ in range(args.warmup):
            sess.run(feeds)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            sess.run(feeds)
            times.append(time.perf_counter() - t0)
        report = {"pack": args.pack, "device": sess.device, **_latency_stats(times)}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f"{key:>14}: {value:.3f}" if isinstance(value, float) else f"{key:>14}: {value}")


def cmd_tune(args: argparse.Namespace) -> int:
    from edgeinfer.tuning import TuneOptions, coverage_report, tune
    from edgeinfer.tuning.report import format_report

    if args.report:
        print(format_report(*coverage_report(args.packs, args.device)))
        return 0
    templates = set(args.templates.split(",")) if args.templates else None
    options = TuneOptions(args.device, args.trials, args.time_budget, args.out, args.records, templates, args.search,
                          args.seed, args.repeat, progress=sys.stderr.isatty())  # fmt: skip
    result = tune(args.packs, options)
    for done in result.results:
        t = done.task
        if done.best_ms is None:
            print(f"{t.template:10s} {t.signature:48s} no valid config ({done.invalid} invalid)")
            continue
        speedup = f"x{done.default_ms / done.best_ms:4.2f}" if done.default_ms else "     "
        default = f"{done.default_ms:8.3f}" if done.default_ms else "       -"
        print(f"{t.template:10s} {t.signature:48s} default {default} -> {done.best_ms:8.3f} ms {speedup}"
              f"  ({done.trials} trials, {done.invalid} invalid) {done.best_config}")  # fmt: skip
    print(f"{len(result.results)} of {result.tasks} workloads tuned; table {result.table_path}")
    if result.stopped:
        print(f"stopped early ({result.stopped}): rerun the same command to resume from {result.records_path}")
        return 130 if result.stopped == "interrupted" else 0
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.backends.opencl.ahead import program_status
    from edgeinfer.pack import read_pack
    from edgeinfer.session import Session

    if args.low_priority and hasattr(os, "nice"):
        os.nice(19)
    for pack in args.packs:
        if not args.check:
            compiled, start = program_cache.STATS["compiled"], time.perf_counter()
            if args.binaries_later:  # the background build of a first run (background_build): OpenCL serves sooner
                Session(pack, device=args.device)  # which starts the child storing binaries, where PoCL needs one
            else:
                with program_cache.storing_binaries():  # building ahead keeps the fastest form to load, on PoCL too
                    Session(pack, device=args.device)
            built = program_cache.STATS["compiled"] - compiled
            print(f"{pack}: built {built} programs in {time.perf_counter() - start:.1f} s")
        status = program_status(read_pack(pack), args.device)
        print(f"{pack}: {status.cached} of {status.needed} programs cached for {status.device_key} "
              f"in {status.cache_dir}")  # fmt: skip
    return 0


def cmd_devices(args: argparse.Namespace) -> None:
    from edgeinfer.backends import backend_status, list_all_devices

    status = backend_status()
    devices = list_all_devices()
    if args.json:
        print(json.dumps({"backends": status, "devices": [d.__dict__ for d in devices]}, indent=1, default=str))
        return
    for name, reason in status.items():
        print(f"backend {name}: {'available' if not reason else 'unavailable: ' + reason}")
    for d in devices:
        state = "usable" if d.usable else f"NOT usable: {d.reason}"
        key = f"  key {d.device_key}  {tuned_table_note(d)}" if d.device_key else ""
        isa = f" ({d.isa})" if d.isa and d.isa != "simt" else ""
        print(f"  {d.spec:<14} {d.kind:<5} {d.name}{isa}{key}  [{state}]")


def tuned_table_note(device: DeviceInfo) -> str:
    """Which tuned-config table the device's kernels take their knobs from."""
    from edgeinfer.tuned_configs import LENDER, load_table

    if device.backend == "cuda":  # its CUDA table, completed by the same GPU's OpenCL table
        from edgeinfer.backends.cuda.runtime import config_table

        table = config_table(device)
    else:
        table = load_table(device.backend, device.device_key, device.family, device.isa)
    entries = [entry for per in table.entries.values() for entry in per.values()]
    own = sum(LENDER not in entry for entry in entries)
    lenders = ", ".join(sorted({entry[LENDER] for entry in entries if LENDER in entry}))
    sibling = table.fallback
    others = f", other templates from {sibling.device_key}" if sibling is not None else ""
    if lenders:
        mine = f"its own ({own} workloads), the others from" if own else "borrowed from"
        return f"tuned table: {mine} {lenders}{others}"
    if not entries:
        if sibling is None:
            return "tuned table: none (heuristic defaults)"
        other_isa = (
            f"; an {sibling.isa} table: configs only where they fit {device.isa}"
            if (device.isa and sibling.isa != device.isa)
            else ""
        )
        return f"tuned table: borrowed from {sibling.device_key} (same family {device.family}{other_isa})"
    return f"tuned table: its own{others}"


if __name__ == "__main__":
    sys.exit(main())
