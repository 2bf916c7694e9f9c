"""The NumPy backend's native kernels against its pure NumPy paths, per ISA build, on the shared models' layers.

    python benchmarks/native_kernels.py                      # every ISA build this CPU runs, every shared model
    python benchmarks/native_kernels.py --isas avx2 sse --models yolox_nano_416.onnx --runs 40
    python benchmarks/native_kernels.py --markdown           # tables to paste into benchmarks/RESULTS.md

The kernels library holds one build per instruction set (``avx512``, ``avx2`` and the SSE2 baseline ``sse`` on
x86-64); ``EDGEINFER_CPU_ISA`` picks which one runs, so an AVX-512 machine measures all three classes. Each
ISA runs in a worker process of its own, where NumPy is held to the same class as the kernels (its SIMD
dispatch through ``NPY_DISABLE_CPU_FEATURES``, OpenBLAS through ``OPENBLAS_CORETYPE``: Haswell for AVX2,
Nehalem for SSE), as it would be on such a CPU; ``--numpy-unrestricted`` lets NumPy use all of this CPU.
The SSE build stands in for small ARM cores (4-lane NEON).

Per kernel kind, every distinct layer of the models (repeats counted) runs with the native kernel and with
NumPy's form, alternating in rounds, each checked against the other:
- ``depthwise``: the depthwise Conv op (taps, bias and the fused activation) as the backend runs it;
- ``max_pool``: the MaxPool op on a channels-last input;
- ``im2col``: a group-1 Conv wider than 1x1 (patch gather, NumPy's sgemm, tail) as the backend runs it;
- ``epilogue``: the tail of every other Conv (bias, residual and activation over its output) through
  ``fused_epilogue``.
Then each whole model: ``Session(pack, "cpu")`` against ``Session(pack, "cpu:numpy")``, alternating in blocks.
A layer that the backend's dispatcher keeps on NumPy on that class (``native_kernels.declines``) is marked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import REPO, SHARED, SHARED_MODELS, random_feeds  # noqa: E402

# OpenBLAS held to each class (its kernels for a CPU of that class)
OPENBLAS_CORE = {"avx2": "Haswell", "sse": "Nehalem"}


def numpy_env(isa: str) -> dict[str, str]:
    """The environment that holds NumPy and OpenBLAS to an ISA class: NumPy's dispatch targets above the class
    turned off (their names differ between NumPy versions: 2.4 has X86_V3, X86_V4, AVX512_*), OpenBLAS's core."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__ as targets
    except ImportError:  # NumPy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__ as targets

    def above(target: str) -> bool:
        if isa == "avx2":
            return target.startswith("AVX512") or target == "X86_V4"
        if isa == "sse":
            return target.startswith(("AVX", "FMA", "F16C")) or target in ("X86_V3", "X86_V4")
        return False

    env = {"NPY_DISABLE_CPU_FEATURES": " ".join(t for t in targets if above(t))}
    if isa in OPENBLAS_CORE:
        env["OPENBLAS_CORETYPE"] = OPENBLAS_CORE[isa]
    return env


KINDS = ("depthwise", "max_pool", "im2col", "epilogue")
DEFAULT_MODELS = [m for m in SHARED_MODELS if "qdq" not in m]  # (the QDQ model has no float kernels to run)


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def alternate(fns: list[Callable[[], object]], runs: int, before: Callable[[], None] | None = None) -> list[float]:
    """Median ms of each function, run in alternating rounds (drift on a shared machine hits all alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:  # warm-up: weight caches, page faults
        fn()
    rounds = 5
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            for _ in range(max(1, runs // rounds)):
                if before is not None:
                    before()
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) * 1e3 for ts in times]


def layer_cases(graph) -> list[dict]:
    """The native-kernel layers of a graph as runnable cases: kind, a geometry key, and a maker of the two runs."""
    from edgeinfer.backends.numpy import native_kernels
    from edgeinfer.backends.numpy.conv_channels_last import fused_epilogue
    from edgeinfer.backends.numpy.executor import node_run

    rng = np.random.default_rng(0)
    cases = []
    for node in graph.nodes:
        info = graph.tensors.get(node.inputs[0]) if node.inputs else None
        if info is None or info.dtype != "float32" or len(info.shape) != 4:
            continue
        out = graph.tensors[node.outputs[0]]
        if node.op == "MaxPool":
            x = channels_last(rng.standard_normal(info.shape, dtype=np.float32))
            node_runs = [node_run(node, graph.constants, native) for native in (False, True)]
            key = (
                "max_pool",
                tuple(info.shape),
                tuple(out.shape),
                json.dumps({k: node.attrs.get(k) for k in ("kernel_shape", "strides", "pads", "dilations")}),
            )
            runs = [lambda r=r, x=x: r.kernel([x], r.node.attrs, r.state) for r in node_runs]
            cases.append({"kind": "max_pool", "key": key, "node": node, "runs": runs, "result": 0})
            continue
        if node.op != "Conv" or node.inputs[1] not in graph.constants:
            continue
        w = graph.constants[node.inputs[1]]
        b = graph.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        has_z = len(node.inputs) > 3 and bool(node.inputs[3])
        z = channels_last(rng.standard_normal(out.shape, dtype=np.float32)) if has_z else None
        act, params = node.attrs.get("activation"), node.attrs.get("activation_params")
        c, group = info.shape[1], int(node.attrs.get("group", 1))
        if group == c == w.shape[0] > 1:
            x = channels_last(rng.standard_normal(info.shape, dtype=np.float32))
            node_runs = [node_run(node, graph.constants, native) for native in (False, True)]
            key = (
                "depthwise",
                tuple(info.shape),
                tuple(out.shape),
                has_z,
                act,
                json.dumps({k: node.attrs.get(k) for k in ("kernel_shape", "strides", "pads", "dilations")}),
            )
            runs = [lambda r=r, i=[x, w, b, z]: r.kernel(i, r.node.attrs, r.state) for r in node_runs]
            cases.append({"kind": "depthwise", "key": key, "node": node, "runs": runs, "result": 0})
            continue
        if native_kernels.gathers_patches(node, graph):  # (the stem reads the NCHW graph input as it is)
            x = rng.standard_normal(info.shape, dtype=np.float32)
            x = x if node.inputs[0] in graph.inputs else channels_last(x)
            node_runs = [node_run(node, graph.constants, native) for native in (False, True)]
            key = (
                "im2col",
                tuple(info.shape),
                tuple(out.shape),
                node.inputs[0] in graph.inputs,
                act,
                json.dumps({k: node.attrs.get(k) for k in ("kernel_shape", "strides", "pads", "dilations")}),
            )
            runs = [lambda r=r, i=[x, w, b, z]: r.kernel(i, r.node.attrs, r.state) for r in node_runs]
            cases.append({"kind": "im2col", "key": key, "node": node, "runs": runs, "result": 0})
            continue
        if b is None and z is None and not act:
            continue
        n, m, ho, wo = out.shape
        y0 = rng.standard_normal((n * ho * wo, m), dtype=np.float32)
        y = y0.copy()
        bias = None if b is None else np.ascontiguousarray(b, np.float32)
        key = ("epilogue", tuple(out.shape), b is not None, has_z, act, json.dumps(params))
        caches: list[dict] = [{}, {}]
        tail = (y, bias, z, act, params)
        runs = [lambda native=native, cache=cache, t=tail: fused_epilogue(*t, cache, native)
                for native, cache in zip((False, True), caches)]  # fmt: skip
        cases.append({"kind": "epilogue", "key": key, "node": node, "runs": runs, "result": None,
                      "reset": lambda y=y, y0=y0: np.copyto(y, y0), "out": y})  # fmt: skip
    for case in cases:
        case["declined"] = native_kernels.declines_node(case["node"], graph)
    return cases


def describe(case: dict) -> str:
    key = case["key"]
    if case["kind"] == "epilogue":
        _, shape, bias, z, act, _ = key
        parts = [p for p, on in (("bias", bias), ("residual", z), (act or "", bool(act))) if on]
        return f"{shape[1]}ch {shape[2]}x{shape[3]} " + "+".join(parts)
    attrs = json.loads(key[-1])
    k, s = attrs.get("kernel_shape") or [], attrs.get("strides") or [1, 1]
    shape = key[1]
    text = f"{shape[1]}ch {shape[2]}x{shape[3]} k{'x'.join(map(str, k))} s{s[0]}"
    if attrs.get("dilations") and any(d != 1 for d in attrs["dilations"]):
        text += f" d{attrs['dilations'][0]}"
    if case["kind"] in ("depthwise", "im2col") and key[4]:
        text += f" +{key[4]}"
    if case["kind"] == "im2col" and key[3]:
        text += " (NCHW stem)"
    return text


def run_case(case: dict, runs: int) -> dict:
    reset = case.get("reset")
    outputs = []
    for fn in case["runs"]:  # the check: both forms on the same input
        if reset:
            reset()
        result = fn()
        outputs.append(np.array(case["out"] if result is None else result[0], copy=True))
    diff = float(np.nanmax(np.abs(outputs[0] - outputs[1]))) if outputs[0].size else 0.0
    numpy_ms, native_ms = alternate(case["runs"], runs, reset)
    return {"numpy_ms": numpy_ms, "native_ms": native_ms, "max_diff": diff}


def bench_model(model: Path, runs: int, kinds: list[str], whole: bool) -> tuple[list[dict], dict | None]:
    import edgeinfer
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack

    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(tmp) / (model.stem + ".pack")
        write_pack(compile_model(model), pack)
        sessions = [edgeinfer.Session(pack, device) for device in ("cpu:numpy", "cpu")]
    graph = sessions[1].graph
    by_key: dict[tuple, dict] = {}
    for case in layer_cases(graph):
        if case["kind"] not in kinds:
            continue
        entry = by_key.setdefault(case["key"], {**case, "count": 0})
        entry["count"] += 1
    layers = []
    for case in by_key.values():
        row = run_case(case, runs)
        layers.append({"model": model.stem, "kind": case["kind"], "node": case["node"].name, "layer": describe(case),
                       "count": case["count"], "declined": case["declined"], **row})  # fmt: skip
    if not whole:
        return layers, None
    feeds = random_feeds(sessions[0].inputs)
    outs = [s.run(feeds) for s in sessions]
    rel = max(float(np.linalg.norm(outs[1][k] - outs[0][k]) / max(np.linalg.norm(outs[0][k]), 1e-30)) for k in outs[0])
    numpy_ms, native_ms = alternate([lambda s=s: s.run(feeds) for s in sessions], max(runs, 10))
    return layers, {"model": model.stem, "numpy_ms": numpy_ms, "native_ms": native_ms, "rel_l2": rel}


def worker(args: argparse.Namespace) -> None:
    from edgeinfer.backends.numpy import native_kernels

    if native_kernels.isa() != args.worker:
        raise SystemExit(f"asked for the {args.worker} build, got: {native_kernels.status()}")
    layers, models = [], []
    for name in args.models:
        model = SHARED / "models" / name
        if not model.exists():
            print(f"skip {name}: not found under {SHARED / 'models'}", file=sys.stderr)
            continue
        rows, whole = bench_model(model, args.runs, args.kinds, not args.no_models)
        layers.extend(rows)
        if whole:
            models.append(whole)
    json.dump({"isa": args.worker, "status": native_kernels.status(), "layers": layers, "models": models}, sys.stdout)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def report(results: list[dict], markdown: bool, all_layers: bool) -> None:
    def table(header: list[str], rows: list[list[str]]) -> None:
        if markdown:
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
            for r in rows:
                print("| " + " | ".join(r) + " |")
        else:
            widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
            for r in [header, *rows]:
                cells = [str(x).ljust(w) if i < 2 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths))]
                print("  ".join(cells))
        print()

    rows = []
    for res in results:
        for kind in KINDS:
            layers = [r for r in res["layers"] if r["kind"] == kind]
            if not layers:
                continue
            numpy_ms = sum(r["numpy_ms"] * r["count"] for r in layers)
            native_ms = sum(r["native_ms"] * r["count"] for r in layers if not r["declined"])
            native_ms += sum(r["numpy_ms"] * r["count"] for r in layers if r["declined"])
            worst = max((r for r in layers if not r["declined"]), key=lambda r: r["native_ms"] / r["numpy_ms"],
                        default=None)  # fmt: skip
            declined = sum(r["count"] for r in layers if r["declined"])
            rows.append([res["isa"], kind, str(sum(r["count"] for r in layers)), str(declined), f"{numpy_ms:.2f}",
                         f"{native_ms:.2f}", f"{numpy_ms / native_ms:.2f}x",
                         "-" if worst is None else f"{worst['numpy_ms'] / worst['native_ms']:.2f}x "
                         f"({worst['model']} {worst['layer']})"])  # fmt: skip
    print(
        "Per kernel kind, all layers of the models (numpy ms and native ms summed over layers x repeats; "
        "declined layers run NumPy)"
    )
    table(["ISA", "kind", "layers", "declined", "numpy ms", "native ms", "speed-up", "slowest native layer"], rows)
    rows = [[res["isa"], m["model"], f"{m['numpy_ms']:.2f}", f"{m['native_ms']:.2f}",
             f"{m['numpy_ms'] / m['native_ms']:.2f}x", f"{m['rel_l2']:.1e}"]
            for res in results for m in res["models"]]  # fmt: skip
    if rows:
        print("Whole models: cpu (native kernels) against cpu:numpy")
        table(["ISA", "model", "cpu:numpy ms", "cpu ms", "speed-up", "rel L2"], rows)
    rows = [[res["isa"], f"{r['model']} {r['node']}", r["kind"], r["layer"], str(r["count"]), f"{r['numpy_ms']:.3f}",
             f"{r['native_ms']:.3f}", f"{r['numpy_ms'] / r['native_ms']:.2f}x", "declined" if r["declined"] else "",
             f"{r['max_diff']:.1e}"]
            for res in results for r in res["layers"]
            if all_layers or (r["native_ms"] > r["numpy_ms"] and not r["declined"])]  # fmt: skip
    print("Every layer" if all_layers else "Layers where the native kernel is slower than NumPy (none is the goal)")
    if rows:
        table(["ISA", "first node", "kind", "layer", "x", "numpy ms", "native ms", "speed-up", "", "max diff"], rows)
    else:
        print("(none)\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    p.add_argument("--isas", nargs="*", help="ISA builds to measure (default: every one this CPU runs)")
    p.add_argument("--runs", type=int, default=20, help="timed runs of each layer and form (whole models: at least 10)")
    p.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS, help="kernel kinds to time")
    p.add_argument("--no-models", action="store_true", help="time the layers only, not the whole models")
    p.add_argument("--numpy-unrestricted", action="store_true", help="NumPy uses all of this CPU's SIMD")
    p.add_argument("--all-layers", action="store_true", help="print every layer, not only those native loses")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(REPO))
    from edgeinfer.backends.numpy import native_kernels

    if not native_kernels.available():
        raise SystemExit(f"native kernels: {native_kernels.status()}")
    isas = args.isas or list(reversed(native_kernels.runnable_isas()))
    results = []
    for isa in isas:
        env = {**os.environ, "EDGEINFER_CPU_ISA": isa}
        if not args.numpy_unrestricted:
            env.update(numpy_env(isa))
        cmd = [sys.executable, __file__, "--worker", isa, "--runs", str(args.runs), "--models", *args.models,
               "--kinds", *args.kinds] + (["--no-models"] if args.no_models else [])  # fmt: skip
        print(f"measuring the {isa} build ...", file=sys.stderr)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{isa} worker failed:\n{out.stderr}")
        results.append(json.loads(out.stdout))
    numpy_note = "NumPy unrestricted" if args.numpy_unrestricted else "NumPy held to each class"
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, commit {git_commit()}, {args.runs} runs each, {numpy_note}\n")  # fmt: skip
    report(results, args.markdown, args.all_layers)


if __name__ == "__main__":
    main()
