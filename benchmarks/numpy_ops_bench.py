"""End-to-end and per-layer timing of the NumPy ops on the real models, side by side with onnxruntime.

Walks the ONNX graph directly ("ops walk": no compiler needed), optionally fusing Conv + Relu/Clip and
the residual Add into the fused Conv form the fusion pass produces, runs each node as the pure NumPy backend
does (Conv, MaxPool and Concat by ``edgeinfer.backends.numpy.kernels``, channels-last, the rest by
``edgeinfer.ops.OPS``) and alternates with onnxruntime (2 threads) in the same process; where
``edgeinfer.compiler`` imports, the real pipeline ("compiled": compile_model + NumPy backend) is timed
the same way. Outputs are checked against onnxruntime in the same run. The per-layer table (from the
ops walk) gives each node's best time over the runs, which is robust on a shared machine. Usage::

    python benchmarks/numpy_ops_bench.py [--runs 30] [--no-fuse] [model.onnx ...]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edgeinfer.backends.numpy.kernels import KERNELS, NodeState
from edgeinfer.ops import OPS

MODELS = Path(os.environ.get("EDGEINFER_SHARED", Path(__file__).resolve().parent.parent.parent / "shared")) / "models"
DEFAULT_MODELS = ["mobilenet_v2_1.0_224.onnx", "squeezenet1.1.onnx"]


def load(path: Path, fuse: bool) -> tuple[list[tuple[str, list[str], list[str], dict]], dict, str, list[int]]:
    """Nodes as (op, inputs, outputs, attrs), constants, input name and shape; Dropout dropped."""
    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in consts)
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    nodes, alias = [], {}
    for n in model.graph.node:
        ins = [alias.get(i, i) for i in n.input]
        if n.op_type == "Dropout":
            alias[n.output[0]] = ins[0]
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if n.op_type == "Clip" and "min" in attrs:  # opset < 11 form
            ins += [f"{n.name}_min", f"{n.name}_max"]
            consts[ins[1]], consts[ins[2]] = np.float32(attrs.pop("min")), np.float32(attrs.pop("max"))
        if n.op_type == "Softmax" and opset < 13:  # old "flatten from axis 1"; same here as trailing dims are 1
            attrs.setdefault("axis", 1)
        nodes.append((n.op_type, ins, list(n.output), attrs))
    if fuse:
        nodes = fuse_conv(nodes, consts, [o.name for o in model.graph.output])
    return nodes, consts, inp.name, shape


def fuse_conv(nodes: list, consts: dict, graph_outputs: list[str]) -> list:
    """Fold Relu/Clip and a residual Add into the Conv that feeds them (what passes/fuse_conv.py does)."""
    readers = defaultdict(int)
    for _, ins, _, _ in nodes:
        for i in ins:
            readers[i] += 1
    producer = {outs[0]: k for k, (_, _, outs, _) in enumerate(nodes)}
    dead = set()
    for k, (op, ins, outs, _) in enumerate(nodes):
        src = producer.get(ins[0]) if ins else None
        if src is None or nodes[src][0] != "Conv" or readers[ins[0]] != 1 or ins[0] in graph_outputs:
            continue
        conv = nodes[src]
        if "activation" in conv[3]:
            continue
        if op == "Relu":
            conv[3]["activation"] = "relu"
        elif op == "Clip":
            conv[3]["activation"], conv[3]["activation_params"] = "clip", [float(consts[ins[1]]), float(consts[ins[2]])]
        elif op == "Add" and len(conv[1]) <= 3:
            conv[1].extend([""] * (3 - len(conv[1])) + [ins[1]])
        else:
            continue
        conv[2][0] = outs[0]
        producer[outs[0]] = src
        dead.add(k)
    return [n for k, n in enumerate(nodes) if k not in dead]


def kind(op: str, ins: list[str], attrs: dict, consts: dict) -> str:
    if op != "Conv":
        return op
    w = consts[ins[1]]
    if attrs.get("group", 1) > 1 and attrs.get("group") == w.shape[0]:
        return f"Conv dw {w.shape[2]}x{w.shape[3]}"
    return f"Conv {w.shape[2]}x{w.shape[3]}"


def macs(op: str, ins: list[str], res: list[np.ndarray], consts: dict) -> int:
    """Multiply-accumulates of a Conv node (0 for other ops)."""
    if op != "Conv":
        return 0
    w = consts[ins[1]]
    return int(res[0].size * np.prod(w.shape[1:]))


def run(nodes: list, consts: dict, feeds: dict, times: list[list[float]] | None = None) -> dict:
    """Run the nodes; with ``times`` append each node's seconds to ``times[node index]``."""
    env = dict(consts)
    env.update(feeds)
    for k, (op, ins, outs, attrs) in enumerate(nodes):
        args = [env[i] if i else None for i in ins]
        t = time.perf_counter()
        res = KERNELS[op](args, attrs, NodeState()) if op in KERNELS else OPS[op].fn(args, attrs)
        if times is not None:
            times[k].append(time.perf_counter() - t)
        env.update(zip(outs, res))
    return env


def report_layers(nodes: list, consts: dict, feeds: dict, runs: int, verbose: bool) -> None:
    """Per layer kind (and with ``verbose`` per node): best-of-runs ms (robust on a shared machine), share, GFLOP/s."""
    times: list[list[float]] = [[] for _ in nodes]
    for _ in range(runs):
        env = run(nodes, consts, feeds, times)
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for k, (op, ins, outs, attrs) in enumerate(nodes):
        t = float(np.min(times[k]))
        mac = macs(op, ins, [env[outs[0]]], consts)
        key = kind(op, ins, attrs, consts)
        per[key][0] += t
        per[key][1] += mac
        per[key][2] += 1
        if verbose:
            shape = "x".join(map(str, env[outs[0]].shape))
            rate = f"{2 * mac / t / 1e9:6.1f} GFLOP/s" if mac else ""
            print(f"    {k:3d} {key:14s} out {shape:16s} {t * 1e3:7.3f} ms {mac / 1e6:7.1f} MMAC {rate}")
    total = sum(v[0] for v in per.values())
    for key, (t, mac, count) in sorted(per.items(), key=lambda kv: -kv[1][0]):
        rate = f"{2 * mac / t / 1e9:6.1f} GFLOP/s" if mac else ""
        print(f"    {key:14s} x{count:<3d} {t * 1e3:7.3f} ms {100 * t / total:5.1f}% {mac / 1e6:7.1f} MMAC {rate}")


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def compiled_runner(path: Path, inp: str) -> Callable[[np.ndarray], dict] | None:
    """``x -> outputs`` through the real pipeline (compile_model + NumPy backend), if it is importable."""
    try:
        from edgeinfer.backends import numpy as numpy_backend
        from edgeinfer.compiler import compile_model
    except ImportError:
        return None
    executable = numpy_backend.prepare(compile_model(str(path)))
    return lambda x: executable.run({inp: x})


def bench_model(path: Path, runs: int, fuse: bool, verbose: bool) -> None:
    """Print end-to-end medians against onnxruntime, then the per-layer table."""
    no_spin = ort.SessionOptions()
    no_spin.intra_op_num_threads = 2
    # Spinning worker threads would steal the second core from the NumPy run that follows each ORT run.
    no_spin.add_session_config_entry("session.intra_op.allow_spinning", "0")
    default = ort.SessionOptions()
    default.intra_op_num_threads = 2
    nodes, consts, inp, shape = load(path, fuse)
    sess = ort.InferenceSession(str(path), no_spin, providers=["CPUExecutionProvider"])
    out = sess.get_outputs()[0].name
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    ref = sess.run([out], {inp: x})[0]
    contenders = {"ops walk": lambda x: run(nodes, consts, {inp: x})}
    compiled = compiled_runner(path, inp)
    if compiled is not None:
        contenders["compiled"] = compiled
    for label, fn in contenders.items():
        err = float(np.abs(fn(x)[out].reshape(ref.shape) - ref).max())
        t_np, t_ort = [], []
        for _ in range(runs):  # alternate, so that drift on a shared machine hits both
            t_ort.append(median_ms(lambda: sess.run([out], {inp: x}), 1))
            t_np.append(median_ms(lambda fn=fn: fn(x), 1))
        a, b = float(np.median(t_np)), float(np.median(t_ort))
        print(f"{path.name} [{label}]: numpy {a:.2f} ms, onnxruntime 2 threads (no spin) {b:.2f} ms, ", end="")
        print(f"ratio {a / b:.2f}, max|err| vs onnxruntime {err:.2g}")
    spin = ort.InferenceSession(str(path), default, providers=["CPUExecutionProvider"])
    best = median_ms(lambda: spin.run([out], {inp: x}), runs)
    print(f"{path.name}: onnxruntime 2 threads, default spinning, timed alone: {best:.2f} ms")
    report_layers(nodes, consts, {inp: x}, runs, verbose)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-fuse", action="store_true")
    ap.add_argument("--layers", action="store_true", help="also print every node")
    args = ap.parse_args()
    for name in args.models:
        path = Path(name) if Path(name).exists() else MODELS / name
        bench_model(path, args.runs, not args.no_fuse, args.layers)


if __name__ == "__main__":
    main()
