"""fp16 packs (``edgeinfer compile --fp16``): weights rounded to half and stored so (passes/precision.py), and on GPUs
every float tensor stored as half with float arithmetic (planning/half_storage.py, common.cl's data_t). The GPU
plans run through PoCL here (conftest.gpu_on_pocl); the H200 runs the same on CUDA (benchmarks/gpu_cuda_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_model
from edgeinfer.errors import PackError
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.pack import read_pack, write_pack
from edgeinfer.passes.precision import WEIGHTS_KEY, round_weights_to_half
from edgeinfer.planning import PlanContext, plan_graph
from edgeinfer.planning.half_storage import STORAGE_ENV, parameter_kinds, wants_half_storage
from edgeinfer.planning.plan import Launch, NoKernel
from edgeinfer.tuned_configs import ConfigTable

RNG = np.random.default_rng(0)


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    expected = expected.astype(np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def conv_relu_graph() -> Graph:
    """x -> Conv 3x3 (8 -> 16, bias, fused relu) -> Resize x2 (linear) -> y."""
    tensors = {"x": TensorInfo("x", (1, 8, 10, 10), "float32"), "h": TensorInfo("h", (1, 16, 10, 10), "float32"),
               "y": TensorInfo("y", (1, 16, 20, 20), "float32")}  # fmt: skip
    constants = {"w": RNG.standard_normal((16, 8, 3, 3)).astype(np.float32) / 8,
                 "b": RNG.standard_normal(16).astype(np.float32),
                 "scales": np.array([1, 1, 2, 2], np.float32)}  # fmt: skip
    nodes = [Node("conv", "Conv", ["x", "w", "b"], ["h"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                            "activation": "relu"}),
             Node("up", "Resize", ["h", "", "scales"], ["y"], {"mode": "linear"})]  # fmt: skip
    return Graph(nodes, ["x"], ["y"], tensors, constants)


def test_rounding_touches_only_weights_and_biases_and_leaves_what_half_cannot_hold():
    graph = conv_relu_graph()
    graph.constants["b"] = graph.constants["b"].copy()
    graph.constants["b"][0] = 1e6  # beyond half's range: this bias stays float32
    w = graph.constants["w"].copy()
    assert round_weights_to_half(graph) == ["w"]
    assert graph.metadata["precision"] == "fp16" and graph.metadata[WEIGHTS_KEY] == ["w"]
    np.testing.assert_array_equal(graph.constants["w"], w.astype(np.float16).astype(np.float32))
    assert graph.constants["w"].dtype == np.float32  # the graph itself runs anywhere as it is
    np.testing.assert_array_equal(graph.constants["scales"], [1, 1, 2, 2])


def test_an_fp16_pack_stores_weights_as_half_and_reads_them_back_exactly(tmp_path):
    pytest.importorskip("onnx")
    from edgeinfer.compiler import compile_model

    path = shared_model("squeezenet1.1.onnx")
    fp32, fp16 = compile_model(path), compile_model(path, fp16=True)
    write_pack(fp32, tmp_path / "fp32.pack")
    write_pack(fp16, tmp_path / "fp16.pack")
    ratio = (tmp_path / "fp16.pack").stat().st_size / (tmp_path / "fp32.pack").stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    back = read_pack(tmp_path / "fp16.pack")
    assert back.metadata["precision"] == "fp16" and len(back.metadata[WEIGHTS_KEY]) == 52  # 26 convs x (w, b)
    for name, array in fp16.constants.items():
        assert back.constants[name].dtype == array.dtype
        np.testing.assert_array_equal(back.constants[name], array)


def test_a_pack_whose_fp16_list_names_no_half_constant_is_refused(tmp_path):
    graph = conv_relu_graph()
    round_weights_to_half(graph)
    graph.metadata[WEIGHTS_KEY] = ["w", "scales_typo"]
    write_pack(graph, tmp_path / "forged.pack")
    with pytest.raises(PackError, match="scales_typo"):
        read_pack(tmp_path / "forged.pack")
    graph.metadata[WEIGHTS_KEY] = "w"
    write_pack(graph, tmp_path / "forged2.pack")
    with pytest.raises(PackError, match="fp16_weights"):
        read_pack(tmp_path / "forged2.pack")


def test_half_storage_is_for_fp16_packs_on_gpus_and_can_be_turned_off(monkeypatch):
    graph = conv_relu_graph()
    assert not wants_half_storage(graph, "gpu")
    round_weights_to_half(graph)
    assert wants_half_storage(graph, "gpu") and not wants_half_storage(graph, "cpu")
    monkeypatch.setenv(STORAGE_ENV, "0")
    assert not wants_half_storage(graph, "gpu")
    monkeypatch.setenv(STORAGE_ENV, "yes")
    with pytest.raises(ValueError, match=STORAGE_ENV):
        wants_half_storage(graph, "gpu")


def test_parameters_are_data_float_or_other_as_the_kernel_declares_them():
    assert parameter_kinds("resize", "resize2d") == ("data", "data", "other", "float", "other", "float", "other",
                                                     "other", "other", "other")  # fmt: skip
    assert parameter_kinds("conv_gemm", "conv_gemm_sum")[:4] == ("float", "data", "data", "data")


def test_half_plans_build_with_data_half_upload_weights_as_half_and_keep_other_floats():
    graph = conv_relu_graph()
    round_weights_to_half(graph)
    ctx = PlanContext(graph, ConfigTable("opencl", "test"), "gpu", 1024, compute_units=132, half_storage=True)
    conv, up = plan_graph(graph, ctx)
    for launch in conv.plan.launches + up.plan.launches:
        assert isinstance(launch, Launch) and launch.defines["DATA_HALF"] == 1
    arrays = [a for launch in conv.plan.launches for a in launch.args if isinstance(a, np.ndarray)]
    assert arrays and all(a.dtype != np.float32 for a in arrays)  # packed weights and bias: half
    resize_arrays = [a for a in up.plan.launches[0].args if isinstance(a, np.ndarray)]
    assert {a.dtype.name for a in resize_arrays} == {"int32", "float32"}  # indices and interpolation weights


def test_a_kernel_without_a_half_form_sends_its_node_to_the_host():
    from edgeinfer.planning.half_storage import store_as_half
    from edgeinfer.planning.plan import KernelPlan, TensorArg

    # resize2d reads its interpolation weights through a `float *` parameter: no half form for a float tensor there.
    launch = Launch("resize", "resize2d", [TensorArg("x"), TensorArg("y"), np.zeros(2, np.int32), TensorArg("w")],
                    (1,), (1,))  # fmt: skip
    with pytest.raises(NoKernel, match="no half-storage form"):
        store_as_half(KernelPlan("resize", {}, "default", [launch]), {"x", "y", "w"})


@pytest.mark.parametrize("file", ["squeezenet1.1.onnx", "mobilenet_v1_0.25_128.onnx"])
def test_gpu_plans_with_half_storage_match_onnxruntime_within_half_precision(gpu_on_pocl, file):
    ort = pytest.importorskip("onnxruntime")
    from edgeinfer.compiler import compile_model

    path = shared_model(file)
    graph = compile_model(path, fp16=True)
    executable = gpu_on_pocl(graph)
    assert executable.half_storage
    rows = executable.explain()
    assert all(row["placement"] == "device" for row in rows), [r for r in rows if r["placement"] != "device"]
    name = graph.inputs[0]
    feeds = {name: RNG.uniform(-1, 1, graph.tensors[name].shape).astype(np.float32)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = executable.run(feeds)
    for output, ref in zip(graph.outputs, want):
        assert got[output].dtype == np.float32
        error = rel_l2(got[output], ref)
        assert 1e-5 < error <= 2e-2, (output, error)  # above fp32's error: the tensors really were half


def test_a_cpu_device_runs_an_fp16_pack_in_float_on_its_rounded_weights(tmp_path):
    pytest.importorskip("onnx")
    from conftest import usable_opencl_device
    from edgeinfer.compiler import compile_model
    from edgeinfer.session import Session

    device = usable_opencl_device()
    if device is None or device.kind != "cpu":
        pytest.skip("no usable OpenCL CPU device")
    write_pack(compile_model(shared_model("mobilenet_v1_0.25_128.onnx"), fp16=True), tmp_path / "m.pack")
    reference = Session(tmp_path / "m.pack", device="cpu:numpy")
    name = reference.inputs[0].name
    x = RNG.uniform(-1, 1, reference.inputs[0].shape).astype(np.float32)
    opencl = Session(tmp_path / "m.pack", device=device.spec)
    assert not opencl._executable.half_storage
    want, got = reference.run({name: x}), opencl.run({name: x})
    for output in want:
        assert rel_l2(got[output], want[output]) <= 1e-4


def test_a_constant_concatenated_on_a_gpu_is_moved_as_half_bits(gpu_on_pocl):
    """tensor.cl moves half tensors as ushort bit patterns: a constant Concat input must be uploaded as float16 too."""
    tensors = {"x": TensorInfo("x", (1, 2, 3, 3), "float32"), "y": TensorInfo("y", (1, 3, 3, 3), "float32")}
    constant = RNG.standard_normal((1, 1, 3, 3)).astype(np.float32)
    graph = Graph([Node("cat", "Concat", ["x", "c"], ["y"], {"axis": 1})], ["x"], ["y"], tensors, {"c": constant},
                  metadata={"precision": "fp16"})  # fmt: skip
    from edgeinfer.passes.memory_plan import plan_memory

    plan_memory(graph)
    executable = gpu_on_pocl(graph)
    assert executable.half_storage and executable.explain()[0]["placement"] == "device"
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    want = np.concatenate([x, constant], axis=1).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(executable.run({"x": x})["y"], want)
