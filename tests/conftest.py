"""Shared test fixtures: where the real models and images are, and small graphs built by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.ir import Graph, Node, TensorInfo

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEINFER_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
IMAGES = SHARED / "images"
DEMO = REPO / "examples" / "data"
# No detached children storing PoCL binaries after the suite's loads (background_build.store_binaries_later): they
# would outlive the run and take the cores. test_binaries_later.py unsets it where it tests them.
os.environ.setdefault("EDGEINFER_POCL_BINARIES", "0")


def shared_model(file: str) -> Path:
    """Path of a model in ../shared/models, skipping the test when it is absent."""
    path = MODELS / file
    if not path.exists():
        pytest.skip(f"shared model {path} not found (set EDGEINFER_SHARED to the folder holding models/)")
    return path


def manifest() -> list[dict]:
    path = MODELS / "manifest.json"
    if not path.exists():
        pytest.skip(f"{path} not found (set EDGEINFER_SHARED)")
    return json.loads(path.read_text())


def tiny_graph() -> Graph:
    """x[1,3,4,4] -> Relu -> Add(bias const) -> y: a graph needing no compiler."""
    tensors = {
        "x": TensorInfo("x", (1, 3, 4, 4), "float32"),
        "r": TensorInfo("r", (1, 3, 4, 4), "float32"),
        "b": TensorInfo("b", (1, 3, 1, 1), "float32"),
        "y": TensorInfo("y", (1, 3, 4, 4), "float32"),
    }
    nodes = [Node("relu0", "Relu", ["x"], ["r"]), Node("add0", "Add", ["r", "b"], ["y"])]
    constants = {"b": np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1)}
    return Graph(nodes, ["x"], ["y"], tensors, constants, metadata={"source_name": "tiny"})


@pytest.fixture
def tiny() -> Graph:
    return tiny_graph()


def usable_opencl_device():
    """The first usable OpenCL device, or None (no pyopencl, no platform, or every device broken)."""
    try:
        from edgeinfer.backends import opencl
    except ImportError:
        return None
    usable = [d for d in opencl.list_devices() if d.usable]
    return usable[0] if usable else None


def conv_pack(path) -> None:
    """x[1,8,12,12] -> 1x1 Conv (16) -> depthwise 3x3 Conv -> y: two tunable workloads."""
    from edgeinfer.pack import write_pack
    from edgeinfer.passes.memory_plan import plan_memory

    rng = np.random.default_rng(0)
    tensors = {
        "x": TensorInfo("x", (1, 8, 12, 12), "float32"),
        "h": TensorInfo("h", (1, 16, 12, 12), "float32"),
        "y": TensorInfo("y", (1, 16, 12, 12), "float32"),
    }
    constants = {
        "w1": rng.standard_normal((16, 8, 1, 1)).astype(np.float32),
        "b1": rng.standard_normal(16).astype(np.float32),
        "w2": rng.standard_normal((16, 1, 3, 3)).astype(np.float32),
        "b2": rng.standard_normal(16).astype(np.float32),
    }
    nodes = [
        Node("pw", "Conv", ["x", "w1", "b1"], ["h"], {"kernel_shape": [1, 1], "pads": [0, 0, 0, 0],
                                                     "strides": [1, 1], "dilations": [1, 1], "group": 1}),
        Node("dw", "Conv", ["h", "w2", "b2"], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                     "strides": [1, 1], "dilations": [1, 1], "group": 16}),
    ]  # fmt: skip
    tensors.update({name: TensorInfo(name, value.shape, "float32") for name, value in constants.items()})
    graph = Graph(nodes, ["x"], ["y"], tensors, constants, metadata={"source_name": "tune-test"})
    graph.memory_plan = plan_memory(graph)
    write_pack(graph, path)


H200_UNITS = 132  # the H200's multiprocessors: how many work-groups GPU plans try to fill


@pytest.fixture
def gpu_on_pocl(monkeypatch):
    """OpenCL executables on the PoCL device that plan as on a GPU with 132 compute units: the GPU plans (no
    channel-blocked layout, local-memory tiles, split-K scratch, fp16 packs' half storage) run without a GPU."""
    import dataclasses

    spec = usable_opencl_device()
    if spec is None:
        pytest.skip("no usable OpenCL device (see `edgeinfer devices`)")
    from edgeinfer.backends.opencl import executor, plans, select_device

    device = select_device(spec.spec)
    gpu = dataclasses.replace(device, info=dataclasses.replace(device.info, kind="gpu", isa="simt",
                                                               device_key="test-gpu", family="test-gpu"))  # fmt: skip
    real = plans.plan_context

    def plan_context(graph, _device, *args, **kwargs):
        ctx = real(graph, gpu, *args, **kwargs)
        return dataclasses.replace(ctx, compute_units=H200_UNITS)

    monkeypatch.setattr(executor, "plan_context", plan_context)
    return lambda graph: executor.OpenCLExecutable(graph, gpu)
