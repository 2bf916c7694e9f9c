"""The implicit-GEMM convolution for GPUs (planning/conv_gemm.py, kernels/opencl/conv_gemm.cl): what the planner
chooses on a GPU (split K on small images, 1x1 convolutions, the fallback when a group cannot be whole), and GPU
plans run for real through PoCL: a device that reports itself as a GPU runs the GPU plans of whole models (no
channel-blocked layout, local-memory tiles, split-K scratch) and must match onnxruntime. The kernels' knob variants
against NumPy are in tests/test_opencl.py (KNOB_CASES)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import H200_UNITS, MODELS, shared_model, usable_opencl_device
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.planning import PlanContext, plan_graph
from edgeinfer.planning import conv_gemm as cg
from edgeinfer.planning.plan import ScratchArg, scratch_floats
from edgeinfer.tuned_configs import ConfigTable

RNG = np.random.default_rng(0)


def conv_graph(c: int, co: int, hw: int, k: int, stride: int = 1, residual: bool = False) -> Graph:
    """x -> Conv(k x k, same padding, stride) [-> Add(x') -> Relu]: one convolution, optionally as ResNet's last
    conv of a bottleneck (its Add and Relu fused by the compiler: the Z input and the activation)."""
    ho = (hw + 2 * (k // 2) - k) // stride + 1
    tensors = {"x": TensorInfo("x", (1, c, hw, hw), "float32"), "y": TensorInfo("y", (1, co, ho, ho), "float32")}
    inputs, attrs = ["x", "w", "b"], {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [k // 2] * 4}
    graph_inputs = ["x"]
    if residual:
        tensors["z"] = TensorInfo("z", (1, co, ho, ho), "float32")
        inputs.append("z")
        graph_inputs.append("z")
        attrs["activation"] = "relu"
    constants = {"w": (RNG.standard_normal((co, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32),
                 "b": RNG.standard_normal(co).astype(np.float32)}  # fmt: skip
    return Graph([Node("conv", "Conv", inputs, ["y"], attrs)], graph_inputs, ["y"], tensors, constants)


def gpu_context(graph: Graph, units: int = H200_UNITS, table: ConfigTable | None = None) -> PlanContext:
    return PlanContext(graph, table or ConfigTable("opencl", "test"), "gpu", 1024, compute_units=units)


def test_small_images_split_k_until_the_gpu_is_full_and_large_ones_do_not():
    """ResNet-50's layer4 3x3 (512 channels, 7x7) has 8 tiles of 64 x 64, 32 of 32 x 32: split 8 ways on 132 units;
    256 channels at 56x56 have 196 tiles of 64 x 64: no split."""
    small = plan_graph(g := conv_graph(512, 512, 7, 3), gpu_context(g))[0].plan
    assert small.config["MODE"] == "igemm" and small.config["SPLIT"] == 8
    assert (small.config["TM"], small.config["TN"]) == (2, 2)
    assert [launch.kernel for launch in small.launches] == ["conv_gemm", "conv_gemm_sum"]
    assert scratch_floats([small]) == 8 * 512 * 49
    large = plan_graph(g := conv_graph(128, 256, 56, 3), gpu_context(g))[0].plan
    assert large.config["SPLIT"] == 1 and (large.config["TM"], large.config["TN"]) == (4, 4)
    assert [launch.kernel for launch in large.launches] == ["conv_gemm"]
    assert not any(isinstance(arg, ScratchArg) for arg in large.launches[0].args)
    shallow = plan_graph(g := conv_graph(3, 64, 7, 3), gpu_context(g))[0].plan  # K = 27: nothing to split
    assert shallow.config["SPLIT"] == 1


def test_a_1x1_convolution_on_a_gpu_is_an_implicit_gemm_even_where_a_table_tuned_it_as_a_gemm():
    """gemm_local gave MobileNetV2's 7x7 projections 3 work-groups; the implicit GEMM splits K (RESULTS 8d)."""
    graph = conv_graph(960, 160, 7, 1)
    table = ConfigTable("opencl", "test")
    table.add("gemm", {"M": 160, "N": 49, "K": 960}, {"VEC": "L", "TM": 4, "TN": 2, "WM": 16, "WN": 16, "BK": 16})
    plan = plan_graph(graph, gpu_context(graph, table=table))[0].plan
    assert [launch.kernel for launch in plan.launches] == ["conv_gemm", "conv_gemm_sum"], plan.launches


def test_the_environment_restores_the_direct_gpu_defaults(monkeypatch):
    monkeypatch.setenv(cg.GPU_CONV_ENV, "direct")
    graph = conv_graph(64, 64, 28, 3)
    assert [launch.kernel for launch in plan_graph(graph, gpu_context(graph))[0].plan.launches] == ["conv2d"]
    graph = conv_graph(64, 256, 28, 1)
    assert plan_graph(graph, gpu_context(graph))[0].plan.template == "gemm"


@pytest.mark.parametrize("value", ["gemm", "Direct", "0"])
def test_an_unknown_gpu_conv_setting_is_an_error_naming_the_variable_and_the_choices(monkeypatch, value):
    monkeypatch.setenv(cg.GPU_CONV_ENV, value)
    graph = conv_graph(64, 64, 28, 3)
    with pytest.raises(ValueError, match=f"EDGEINFER_GPU_CONV must be igemm or direct \\(or unset\\), got '{value}'"):
        plan_graph(graph, gpu_context(graph))
    monkeypatch.setenv(cg.GPU_CONV_ENV, " ")  # blank: as unset
    assert plan_graph(graph, gpu_context(graph))[0].plan.launches[0].kernel == "conv_gemm"


def test_a_nearest_direct_config_does_not_choose_the_kernel_of_another_workload():
    """A table tuned on direct configs (the H200 OpenCL table) lends them to its exact workloads only."""
    table = ConfigTable("opencl", "test")
    table.add("conv2d", {"C": 64, "Co": 64, "H": 56, "W": 56, "KH": 3, "KW": 3, "S": 1, "G": 1}, {"TM": 4, "TN": 4})
    graph = conv_graph(256, 256, 14, 3)
    plan = plan_graph(graph, gpu_context(graph, table=table))[0].plan
    assert plan.config["MODE"] == "igemm" and plan.config_source.startswith("default (the nearest")


def test_max_pools_on_a_gpu_compute_one_output_per_work_item():
    """The CPUs' separable maxpool_rows walks every row of a column block in one work-item: on the H200 a stem's
    3x3/2 MaxPool took 65-99 us that way."""
    tensors = {"x": TensorInfo("x", (1, 64, 112, 112), "float32"), "y": TensorInfo("y", (1, 64, 56, 56), "float32")}
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    graph = Graph([Node("pool", "MaxPool", ["x"], ["y"], attrs)], ["x"], ["y"], tensors, {})
    (launch,) = plan_graph(graph, gpu_context(graph))[0].plan.launches
    assert launch.kernel == "pool2d" and int(np.prod(launch.local)) == 128
    cpu = PlanContext(graph, ConfigTable("opencl", "test"), "cpu", 4096)
    assert plan_graph(graph, cpu)[0].plan.launches[0].kernel == "maxpool_rows"


def test_tile_rules_and_the_knob_space():
    assert cg.tile_shortfall({"TM": 4, "TN": 4, "WM": 16, "WN": 16, "BK": 16, "SPLIT": 1}, 1024) is None
    assert "multiple of TN" in cg.tile_shortfall({"TM": 4, "TN": 8, "WM": 4, "WN": 16, "BK": 16, "SPLIT": 1}, 1024)
    assert "exceeds" in cg.tile_shortfall({"TM": 4, "TN": 4, "WM": 32, "WN": 32, "BK": 16, "SPLIT": 1}, 512)
    graph = conv_graph(512, 512, 7, 3)
    workload = {"C": 512, "Co": 512, "H": 7, "W": 7, "KH": 3, "KW": 3, "S": 1, "G": 1}
    found = cg.candidates(workload, gpu_context(graph))
    assert len(found) > 100 and all(cg.tile_shortfall(c, 1024) is None for c in found)
    assert {c["SPLIT"] for c in found} == {1, 2, 4, 8, 16}


# ---------------------------------------------------------------- GPU plans, run on PoCL

DEVICE = usable_opencl_device()
needs_opencl = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (see `edgeinfer devices`)")


def _rel_l2(actual, expected) -> float:
    expected = expected.astype(np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


@needs_opencl
@pytest.mark.parametrize("c, co, hw, k, stride", [(512, 512, 7, 3, 1), (256, 1024, 14, 1, 1), (64, 128, 17, 3, 2)])
def test_gpu_plans_with_split_k_and_the_residual_epilogue_match_numpy(gpu_on_pocl, c, co, hw, k, stride):
    from edgeinfer.ops import get_op

    graph = conv_graph(c, co, hw, k, stride, residual=True)
    feeds = {name: RNG.standard_normal(graph.tensors[name].shape).astype(np.float32) for name in graph.inputs}
    executable = gpu_on_pocl(graph)
    row = executable.explain()[0]
    assert row["placement"] == "device" and row["config"]["MODE"] == "igemm", row
    node = graph.nodes[0]
    want = get_op("Conv").fn([feeds["x"], graph.constants["w"], graph.constants["b"], feeds["z"]], node.attrs)[0]
    assert _rel_l2(executable.run(feeds)["y"], want) <= 1e-5


@needs_opencl
@pytest.mark.parametrize("file", ["squeezenet1.1.onnx", "mobilenet_v1_0.25_128.onnx"])
def test_whole_models_planned_for_a_gpu_match_onnxruntime(gpu_on_pocl, file):
    ort = pytest.importorskip("onnxruntime")
    path = shared_model(file)
    if not path.exists():
        pytest.skip(f"{file} not in {MODELS}")
    from edgeinfer.compiler import compile_model

    graph = compile_model(path)
    executable = gpu_on_pocl(graph)
    assert any(row.get("config", {}).get("MODE") == "igemm" for row in executable.explain())
    name = graph.inputs[0]
    feeds = {name: RNG.uniform(-1, 1, graph.tensors[name].shape).astype(np.float32)}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = executable.run(feeds)
    for output, ref in zip(graph.outputs, want):
        assert _rel_l2(got[output], ref) <= 1e-4, output
