"""The planning layer (edgeinfer/planning) needs no GPU driver: with pyopencl and cupy blocked from import it plans
every node of every shared model for a GPU and for CPU devices (channel-blocked, AVX-512 and AVX2); and its
residual-Add rewrite rebinds a conv launch's epilogue through the launch's named slots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODELS, REPO
from edgeinfer.cpu_isa import isa_class
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.passes.memory_plan import plan_memory
from edgeinfer.planning import PlanContext, TensorArg, layout, plan_graph
from edgeinfer.planning.plan import NO_RESIDUAL, RESIDUAL_AFTER_ACTIVATION
from edgeinfer.planning.rewrites import fuse_residual_adds
from edgeinfer.tuned_configs import ConfigTable

BLOCKED_MODULES = ("pyopencl", "cupy")

# Runs in a fresh interpreter: the blocker is installed before anything of edgeinfer is imported.
PLAN_EVERY_MODEL = r"""
import importlib.abc, json, sys
from pathlib import Path

BLOCKED = {blocked!r}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked by the driver-free test")
        return None


sys.meta_path.insert(0, Blocker())

import importlib, pkgutil

import edgeinfer.planning
from edgeinfer.compiler import compile_model
from edgeinfer.cpu_isa import isa_class
from edgeinfer.planning import Launch, PlanContext, layout, plan_graph
from edgeinfer.tuned_configs import data_dir, load_table

modules = [info.name for info in pkgutil.iter_modules(edgeinfer.planning.__path__, "edgeinfer.planning.")]
for module in modules:
    importlib.import_module(module)

CONV_OPS = ("Conv", "Gemm", "MatMul", layout.SEPARABLE)
CONTEXTS = {{"gpu": ("gpu", "nvidia", "simt", 1024), "avx512": ("cpu", "avx512", "avx512", 4096),
            "avx2": ("cpu", "haswell", "avx2", 4096)}}
tables = sorted(path.stem for path in (data_dir("tuned_configs") / "opencl").glob("*.json"))
report = {{}}
for model in sorted(Path(sys.argv[1]).glob("*.onnx")):
    graph = compile_model(model)
    for name, (kind, key_part, isa, group_limit) in CONTEXTS.items():
        key = next((table for table in tables if key_part in table), "no-table")
        planned = layout.for_device(graph, kind, isa_class(isa))
        ctx = PlanContext(planned, load_table("opencl", key), kind, group_limit, isa=isa_class(isa))
        records = plan_graph(planned, ctx)
        # The launch that writes a node's output carries the epilogue (a split-K conv's partial products do not).
        launches = [r.plan.launches[-1] for r in records if r.plan and r.plan.launches
                    and isinstance(r.plan.launches[-1], Launch)]
        report[f"{{model.stem}}/{{name}}"] = {{
            "nodes": len(planned.nodes),
            "records": len(records),
            "planned": sum(r.plan is not None for r in records),
            "unexplained": [r.node.name for r in records if r.plan is None and not r.fallback_reason],
            "convs_on_host": [r.node.name for r in records if r.plan is None and r.node.op in CONV_OPS],
            "conv_launches_without_epilogue": [launch.kernel for launch in launches
                                               if launch.kernel.startswith(("conv", "depthwise", "gemm"))
                                               and launch.epilogue is None],
            "blocked_nodes": sum(layout.LAYOUT_ATTR in node.attrs for node in planned.nodes),
        }}
report["modules"] = modules
report["imported"] = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps(report))
"""


def test_planning_plans_every_shared_model_without_pyopencl_or_cupy():
    if not sorted(MODELS.glob("*.onnx")):
        pytest.skip(f"no shared models in {MODELS} (set EDGEINFER_SHARED to the folder holding models/)")
    pytest.importorskip("onnx", reason="compiling the models needs onnx")
    env = {key: value for key, value in os.environ.items() if key != layout.LAYOUT_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    code = PLAN_EVERY_MODEL.format(blocked=BLOCKED_MODULES)
    done = subprocess.run([sys.executable, "-c", code, str(MODELS)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report.pop("imported") == []
    assert "edgeinfer.planning.rewrites" in report.pop("modules")  # every module of the layer was imported
    assert len(report) == 3 * len(sorted(MODELS.glob("*.onnx")))
    for name, row in report.items():
        assert row["records"] == row["nodes"] and row["planned"] > 0, name
        assert row["unexplained"] == [] and row["conv_launches_without_epilogue"] == [], (name, row)
        assert row["convs_on_host"] == [], (name, row)
        if name.endswith("/gpu"):
            assert row["blocked_nodes"] == 0, name  # the channel-blocked layout is for CPU devices only
    for isa in ("avx512", "avx2"):
        assert sum(row["blocked_nodes"] for name, row in report.items() if name.endswith(f"/{isa}")) > 0, isa


def test_the_blocker_blocks():
    """The subprocess's blocker does refuse pyopencl, so the test above would fail if a planning module imported it."""
    code = PLAN_EVERY_MODEL.format(blocked=BLOCKED_MODULES).split("from edgeinfer")[0] + "import pyopencl\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "blocked by the driver-free test" in done.stderr


def residual_graph() -> Graph:
    """x -> Conv 3x3 (SiLU fused) -> c; y = Add(c, r); y -> Conv 1x1 -> out: YOLOX's act-then-add bottleneck."""
    rng = np.random.default_rng(0)
    shape = (1, 16, 10, 10)
    tensors = {name: TensorInfo(name, shape, "float32") for name in ("x", "r", "c", "y", "out")}
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "activation": "silu"}
    nodes = [
        Node("conv", "Conv", ["x", "W", "B"], ["c"], attrs),
        Node("add", "Add", ["c", "r"], ["y"], {}),
        Node("last", "Conv", ["y", "W1"], ["out"], {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0] * 4}),
    ]
    constants = {
        "W": rng.standard_normal((16, 16, 3, 3)).astype(np.float32),
        "B": rng.standard_normal(16).astype(np.float32),
        "W1": rng.standard_normal((16, 16, 1, 1)).astype(np.float32),
    }
    graph = Graph(nodes, ["x", "r"], ["out"], tensors, constants)
    graph.memory_plan = plan_memory(graph)
    return graph


@pytest.mark.parametrize("kind, isa", [("gpu", "simt"), ("cpu", "avx512"), ("cpu", "avx2")])
def test_residual_add_rewrite_uses_the_named_epilogue_slots(kind, isa, monkeypatch):
    """NCHW conv2d on the GPU context, conv_direct_blocked on the CPU ones: their epilogues sit at other positions;
    the rewrite finds Z, Y and has_z through Launch.epilogue alone."""
    monkeypatch.delenv(layout.LAYOUT_ENV, raising=False)
    graph = layout.for_device(residual_graph(), kind, isa_class(isa))
    records = plan_graph(graph, PlanContext(graph, ConfigTable("opencl", "test"), kind, 1024, isa=isa_class(isa)))
    index = next(i for i, record in enumerate(records) if record.node.name == "conv")
    add = records[index + 1]
    assert add.node.name == "add", [r.node.name for r in records]
    launch = records[index].plan.launches[-1]  # the one that writes the output (after a split-K conv's partials)
    slots = launch.epilogue
    c_out, y, residual = records[index].node.outputs[0], add.node.outputs[0], add.node.inputs[1]
    assert launch.args[slots.z_slot] == launch.args[slots.y_slot] == TensorArg(c_out)
    assert int(launch.args[slots.has_z_slot]) == NO_RESIDUAL
    others = [arg for i, arg in enumerate(launch.args) if i not in (slots.z_slot, slots.y_slot, slots.has_z_slot)]

    redirected, _ = fuse_residual_adds(records, graph, guard=256)

    assert redirected == {index: y}
    assert launch.args[slots.z_slot] == TensorArg(residual) and launch.args[slots.y_slot] == TensorArg(y)
    assert int(launch.args[slots.has_z_slot]) == RESIDUAL_AFTER_ACTIVATION
    rest = [arg for i, arg in enumerate(launch.args) if i not in (slots.z_slot, slots.y_slot, slots.has_z_slot)]
    assert all(a is b for a, b in zip(rest, others)) and len(rest) == len(others)  # nothing else moved
    assert add.plan.launches == [] and records[index].plan.config["residual_add"] == "add"


def test_residual_add_rewrite_leaves_a_conv_with_a_residual_input_alone():
    """A conv whose epilogue already adds Z (the compiler's fusion, has_z 1) cannot take a second residual."""
    graph = residual_graph()
    conv = graph.nodes[0]
    graph.nodes[0] = Node(conv.name, conv.op, [*conv.inputs, "r"], conv.outputs, conv.attrs)
    records = plan_graph(graph, PlanContext(graph, ConfigTable("opencl", "test"), "gpu", 1024))
    launch = records[0].plan.launches[-1]
    before = list(launch.args)
    assert fuse_residual_adds(records, graph, guard=256) == ({}, set())
    assert all(a is b for a, b in zip(launch.args, before)) and records[1].plan.launches


def test_kernel_source_keeps_one_kernel_and_everything_else():
    """kernel_source(template, k): the template's text with every other kernel's definition cut out, helpers and
    macros kept (a PoCL program of one kernel, docs/program-cache.md)."""
    import re

    from edgeinfer.planning.templates import kernel_source, template_source
    from edgeinfer.tuned_configs import data_dir

    pattern = re.compile(r"__kernel\s+void\s+(\w+)\s*\(")
    templates = [path.stem for path in (data_dir("kernels") / "opencl").glob("*.cl")]
    checked = 0
    for template in templates:
        whole = template_source(template)
        kernels = pattern.findall(whole)
        for kernel in kernels:
            text = kernel_source(template, kernel)
            assert pattern.findall(text) == [kernel], (template, kernel)
            assert text.count("{") == text.count("}")
            assert "#define" in text and len(text) < len(whole) or len(kernels) == 1
            checked += 1
    assert checked >= 30
