"""Tune the OpenCL kernel knobs on the current device and write tuned_configs/opencl/<device-key>.json.

    python benchmarks/opencl_tune.py                                  # shared models, first usable device
    python benchmarks/opencl_tune.py --models mobilenet_v2_1.0_224.onnx --templates depthwise
    python benchmarks/opencl_tune.py --device opencl:0:0 --out /tmp/table.json --rounds 3

For every distinct (template, workload) of the models' Conv/Gemm/MatMul nodes, each candidate config runs
the node alone (a one-node graph with the model's weights) and is timed with OpenCL profiling events.
Candidates are timed in interleaved rounds and scored by their best round, so load from other processes
on a shared machine hurts every candidate alike. The table keeps the best config with its time and the
default config's time (speed-up = default_ms / time_ms). Entries of other workloads already in the table
are kept.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeinfer.backends import opencl  # noqa: E402
from edgeinfer.backends.opencl import layout  # noqa: E402
from edgeinfer.backends.opencl.kernels import NoKernel, PlanContext, plan_node  # noqa: E402
from edgeinfer.backends.opencl.kernels_conv import pick_column_block  # noqa: E402
from edgeinfer.backends.opencl.runtime import select_device  # noqa: E402
from edgeinfer.ir import Graph, Node  # noqa: E402
from edgeinfer.tuned_configs import ConfigTable, read_table, table_path, workload_signature, write_table  # noqa: E402

SHARED = Path(os.environ.get("EDGEINFER_SHARED", REPO.parent / "shared"))
DEFAULT_MODELS = ["mobilenet_v2_1.0_224.onnx", "squeezenet1.1.onnx", "yolox_nano_416.onnx"]
TUNABLE = ("gemm", "conv2d", "depthwise", "pw16", "direct16", "dw16", "sep16")


def local_candidates(kind: str) -> list[list[int]]:
    if kind == "cpu":  # one group is one task of a PoCL worker thread: few work-items per group
        return [[1, 1, 1], [2, 1, 1], [4, 1, 1], [8, 1, 1], [16, 1, 1], [2, 2, 1], [4, 2, 1], [4, 4, 1], [1, 4, 1]]
    return [[16, 4, 1], [32, 2, 1], [8, 8, 1], [64, 1, 1], [16, 8, 1], [32, 4, 1], [4, 16, 1]]


def candidates(template: str, workload: dict, kind: str) -> list[dict]:
    """Configs worth trying for one workload (the kernels' knob ranges, pruned by the workload's shape)."""
    locals_ = local_candidates(kind)
    groups = [[1, 1, 1], [2, 1, 1], [4, 1, 1], [1, 2, 1]] if kind == "cpu" else locals_  # blocked templates
    if template in ("pw16", "direct16"):  # NB x TP accumulators of 16 lanes, plus NB weights, in 32 registers
        tiles = [(tp, nb) for tp in (4, 6, 7, 8, 10, 12, 14) for nb in (1, 2, 3, 4) if tp * nb <= 28]
        return [{"TP": tp, "NB": nb, "local": lo} for tp, nb in tiles for lo in groups
                if nb <= layout.blocks(workload["Co"]) and tp <= 2 * workload["W"] * workload["H"]]  # fmt: skip
    if template == "sep16":  # NB x TP accumulators, TP depthwise vectors and NB weights in 32 registers
        tiles = [(tp, nb) for tp in (4, 6, 7, 8, 10, 12, 14) for nb in (1, 2, 3, 4) if tp * nb + tp + nb <= 30]
        return [{"TP": tp, "NB": nb, "local": lo} for tp, nb in tiles for lo in groups
                if nb <= layout.blocks(workload["Co"]) and tp <= 2 * workload["W"]]  # fmt: skip
    if template == "dw16":
        return [{"TW": tw, "TY": ty, "local": lo} for tw in (2, 4, 8) for ty in (1, 2, 4) if tw * ty <= 16
                for lo in groups]  # fmt: skip
    few_locals = [[1, 1, 1], [2, 1, 1], [1, 2, 1]] if kind == "cpu" else locals_
    if template == "gemm":
        pairs = [(tm, tn) for tm, tn in itertools.product((4, 8, 16), (8, 16)) if tn <= 2 * workload["N"]]
        shapes = [{"VEC": "N", "TM": tm, "TN": tn, "UNROLL_K": 4} for tm, tn in pairs]
        column_blocks = sorted({pick_column_block(workload["N"]), min(4, workload["N"]), min(8, workload["N"])})
        pairs = itertools.product((8, 16), column_blocks)
        shapes += [{"VEC": "M", "TM": tm, "TN": tn, "UNROLL_K": 4} for tm, tn in pairs]
        found = [{**shape, "local": lo} for shape in shapes for lo in locals_]
        vectors = [nv for nv in (1, 2, 3, 4) if 16 * (nv - 1) < workload["N"]]  # at most one partial vector
        rows = [tm for tm in (4, 6, 8, 12, 14, 16) if tm < 2 * workload["M"]]
        if kind == "cpu":
            shapes = itertools.product(rows, vectors, few_locals)
            found += [{"VEC": "B", "TM": tm, "NV": nv, "local": lo} for tm, nv, lo in shapes]
        elif workload["N"] < 4:  # gemm_reduce: a work-group per row
            found += [{"VEC": "R", "RG": group} for group in (32, 64, 128, 256)]
        elif workload["N"] >= 16 and workload["M"] >= 16:  # gemm_local: the work-group shape is part of the tile
            tiles = itertools.product((2, 4, 8), (1, 2, 4), ((16, 16), (8, 8), (16, 8), (8, 32)), (8, 16))
            found += [{"VEC": "L", "TM": tm, "TN": tn, "WM": wm, "WN": wn, "BK": bk}
                      for tm, tn, (wm, wn), bk in tiles if wm * tm <= 2 * workload["M"]]  # fmt: skip
        return found
    widths = [tn for tn in (4, 8, 16) if tn <= 2 * workload["W"]]
    if template == "depthwise":
        found = [{"TN": tn, "TY": ty, "local": lo} for tn in widths for ty in (1, 2, 4, 8) for lo in locals_]
        two_d = [lo[:2] for lo in few_locals]
        found += [{"MODE": "rows", "TN": tn, "TY": ty, "local": lo} for tn in widths for ty in (1, 2, 4, 8)
                  for lo in two_d]  # fmt: skip
        if workload["S"] == 1:  # depthwise_flat (the planner refuses it where the plane is too wide)
            channels = [tc for tc in (1, 2, 4, 8, 16) if workload["C"] % tc == 0]
            found += [{"MODE": "flat", "TN": tn, "TC": tc, "local": lo} for tn in (8, 16) for tc in channels
                      for lo in two_d]  # fmt: skip
        return found
    found = [{"TM": tm, "TN": tn, "local": lo} for tm in (4, 8, 16) for tn in widths for lo in locals_]
    rows = [tm for tm in (4, 6, 8, 12, 16) if tm < 2 * workload["Co"]]
    return found + [{"TM": tm, "TN": tn, "BCAST": 1, "local": lo} for tm in rows for tn in widths for lo in few_locals]


def single_node_graph(graph: Graph, node: Node) -> tuple[Graph, dict[str, np.ndarray]]:
    """``node`` alone, its non-constant inputs becoming graph inputs filled with seeded random data."""
    rng = np.random.default_rng(0)
    inputs = [name for name in dict.fromkeys(node.inputs) if name and name not in graph.constants]
    names = set(inputs) | {o for o in node.outputs if o}
    constants = {name: graph.constants[name] for name in node.inputs if name in graph.constants}
    tensors = {name: graph.tensors[name] for name in names}
    single = Graph([node], inputs, [o for o in node.outputs if o], tensors, constants, dict(graph.metadata))
    feeds = {name: rng.standard_normal(tensors[name].shape).astype(tensors[name].dtype) for name in inputs}
    return single, feeds


def kernel_ms(executable, feeds: dict[str, np.ndarray], repeat: int) -> float:
    rows = executable.profile(feeds, repeat=repeat)
    return sum(row["time_ms"] for row in rows if row["name"] not in ("(read outputs)", "(write inputs)"))


def tune_workload(single: Graph, feeds, device, template: str, configs: list[dict], rounds: int, repeat: int):
    """(best config, its ms, default ms): every candidate timed once per round, best round kept.

    The default config competes too: where no candidate beats it, the table records the default itself, so
    that a tuned table never makes a workload slower than an untuned device."""
    prepared = [(c, opencl.prepare(single, device, overrides={template: c})) for c in configs]
    # A config the planner refuses for this workload (NoKernel) leaves the node on the CPU: not a candidate.
    prepared = [(c, e) for c, e in prepared if e.explain()[0]["placement"] == "device"]
    configs, executables = [c for c, _ in prepared], [e for _, e in prepared]
    default = opencl.prepare(single, device)
    best = [float("inf")] * len(configs)
    default_best = float("inf")
    for _ in range(rounds):
        default_best = min(default_best, kernel_ms(default, feeds, repeat))
        for index, executable in enumerate(executables):
            best[index] = min(best[index], kernel_ms(executable, feeds, repeat))
    winner = int(np.argmin(best))
    if default_best <= best[winner]:
        return default.explain()[0]["config"], default_best, default_best
    return configs[winner], best[winner], default_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--templates", default=",".join(TUNABLE))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="table to write (default: the device's shipped table)")
    args = parser.parse_args()

    from edgeinfer.compiler import compile_model

    device = select_device(args.device)
    key = device.info.device_key
    out = args.out or table_path("opencl", key)
    table = read_table(out, "opencl", key) if out.is_file() else ConfigTable("opencl", key)
    table.family = device.info.family
    templates = set(args.templates.split(","))
    print(f"device {device.info.spec} {device.info.name} key={key} -> {out}")
    seen: set[tuple[str, str]] = set()
    for model in args.models:
        graph = compile_model(SHARED / "models" / model)
        if layout.wanted(device.info.kind):  # tune the kernels the executor will run: blocked ones on CPUs
            graph = layout.apply(graph)
        ctx = PlanContext(graph, ConfigTable("opencl", key), device.info.kind, device.device.max_work_group_size)
        for node in graph.nodes:
            if node.placement != "device" or node.op not in ("Conv", "Gemm", "MatMul", layout.SEPARABLE):
                continue
            try:
                plan = plan_node(node, ctx)
            except NoKernel:
                continue
            if plan.template not in templates:
                continue
            workload = plan_workload(node, graph, ctx, plan.template)
            signature = (plan.template, workload_signature(workload))
            if signature in seen:
                continue
            seen.add(signature)
            single, feeds = single_node_graph(graph, node)
            configs = candidates(plan.template, workload, device.info.kind)
            start = time.perf_counter()
            config, ms, default_ms = tune_workload(single, feeds, args.device, plan.template, configs, args.rounds,
                                                   args.repeat)  # fmt: skip
            table.add(plan.template, workload, config, time_ms=round(ms, 4), default_ms=round(default_ms, 4))
            write_table(table, out)
            print(f"{model[:20]:20s} {plan.template:9s} {signature[1]:45s} {default_ms:7.3f} -> {ms:7.3f} ms "
                  f"x{default_ms / ms:4.2f} {config} ({len(configs)} configs, {time.perf_counter() - start:.0f}s)")


def plan_workload(node: Node, graph: Graph, ctx: PlanContext, template: str) -> dict:
    """The workload signature the planner looks up, recovered by planning with a recording table."""
    recorded: dict = {}

    class Recorder(ConfigTable):
        def lookup(self, template, workload, default):
            recorded.update(workload)
            return default(), "default"

    plan_node(node, PlanContext(graph, Recorder("opencl", ""), ctx.device_kind, ctx.max_work_group_size))
    return recorded


if __name__ == "__main__":
    main()
