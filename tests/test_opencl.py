"""OpenCL backend: single-node kernels against the NumPy ops, the program cache, config lookup, fallback
placement, profiling, and every shared model against onnxruntime (relative L2 <= 1e-4) on the first usable
OpenCL device (PoCL in CI). Skips with the reason when no OpenCL device is usable."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")

from conftest import usable_opencl_device  # noqa: E402
from edgeinfer.ir import Graph, Node, TensorInfo  # noqa: E402
from edgeinfer.ops import get_op  # noqa: E402

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (see `edgeinfer devices`)")
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def nchw_layout(monkeypatch):
    """These tests are about the NCHW kernels and the executor's mechanics, so they run without the channel-
    blocked layout that CPU devices get by default (tests/test_opencl_blocked.py covers that one). The model
    tests run both layouts."""
    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", "nchw")


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    expected = expected.astype(np.float64)
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / max(np.linalg.norm(expected), 1e-30))


def single_node_graph(op: str, inputs: dict, constants: dict, attrs: dict, input_order: list[str], n_outputs=1):
    """A one-node graph whose output shapes come from running the NumPy op."""
    arrays = {**inputs, **constants}
    outputs = get_op(op).fn([arrays[n] if n else None for n in input_order], attrs)
    out_names = [f"y{i}" for i in range(n_outputs)]
    tensors = {n: TensorInfo(n, a.shape, str(a.dtype)) for n, a in inputs.items()}
    tensors.update({n: TensorInfo(n, a.shape, str(a.dtype)) for n, a in zip(out_names, outputs)})
    node = Node("node", op, input_order, out_names, attrs)
    graph = Graph([node], list(inputs), out_names, tensors, dict(constants))
    return graph, dict(zip(out_names, outputs))


def run_opencl(graph: Graph, feeds: dict) -> dict:
    from edgeinfer.backends import opencl

    return opencl.prepare(graph, DEVICE.spec).run(feeds)


def check_node(op, inputs, constants, attrs, order, tol=1e-5, n_outputs=1):
    graph, expected = single_node_graph(op, inputs, constants, attrs, order, n_outputs)
    from edgeinfer.backends import opencl

    executable = opencl.prepare(graph, DEVICE.spec)
    explained = executable.explain()[0]
    assert explained["placement"] == "device", explained
    actual = executable.run(inputs)
    for name, value in expected.items():
        assert actual[name].shape == value.shape and actual[name].dtype == value.dtype
        if value.dtype == np.float32:
            assert rel_l2(actual[name], value) <= tol, (op, attrs, rel_l2(actual[name], value))
        else:
            assert np.array_equal(actual[name], value), op
    return explained


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- convolution family

CONV_CASES = [
    # (C, H, W, Co, k, stride, pad, group, dilation, activation)
    (8, 14, 14, 24, 1, 1, 0, 1, 1, None),  # 1x1: gemm
    (5, 7, 7, 19, 1, 1, 0, 1, 1, ("clip", [0.0, 6.0])),  # gemm with odd M, N tails
    (3, 17, 19, 10, 3, 2, 1, 1, 1, ("relu", [])),  # direct, stride 2
    (6, 13, 21, 12, 3, 1, 1, 2, 1, ("leaky_relu", [0.1])),  # direct, grouped
    (4, 12, 12, 6, 5, 1, 2, 1, 2, ("silu", [])),  # direct, dilated 5x5
    (16, 15, 15, 16, 3, 1, 1, 16, 1, ("clip", [0.0, 6.0])),  # depthwise
    (16, 28, 29, 16, 3, 2, 1, 16, 1, ("hard_swish", [])),  # depthwise stride 2
    (8, 9, 40, 8, 5, 1, 2, 8, 1, ("sigmoid", [])),  # depthwise 5x5
    (8, 12, 21, 8, 3, 1, 2, 8, 2, None),  # depthwise dilated
    (8, 11, 23, 8, 3, 2, 1, 8, 1, None),  # depthwise stride 2, odd sizes
    (4, 10, 10, 8, 2, 2, 0, 1, 1, ("tanh", [])),  # direct 2x2 stride 2, no pad
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv(case):
    c, h, w, co, k, s, p, g, d, act = case
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4, "group": g, "dilations": [d, d]}
    if act:
        attrs.update(activation=act[0], activation_params=act[1])
    x = randn(1, c, h, w)
    consts = {"W": randn(co, c // g, k, k), "B": randn(co)}
    check_node("Conv", {"x": x}, consts, attrs, ["x", "W", "B"])


KNOB_CASES = [  # (template, config, x shape, weight shape, conv attributes): every kernel variant of a template
    *[("depthwise", config, (2, 6, 13, 15), (6, 1, 3, 3), {"pads": [1] * 4, "group": 6})
      for config in ({"TN": 8, "TY": 8}, {"MODE": "rows", "TN": 16, "TY": 4}, {"MODE": "rows", "TN": 4, "TY": 1},
                     {"MODE": "flat", "TN": 16, "TC": 4}, {"MODE": "flat", "TN": 8, "TC": 1},
                     {"MODE": "rows", "TN": 4, "TY": 2, "local": [4, 8]},  # global sizes rounded up past the
                     {"MODE": "flat", "TN": 8, "TC": 1, "local": [4, 8]},  # tensor: the kernels must stop there
                     {"TN": 4, "TY": 2, "local": [4, 4, 4]})],
    ("depthwise", {"MODE": "rows", "TN": 8, "TY": 2}, (1, 4, 23, 21), (4, 1, 3, 3),
     {"pads": [1] * 4, "group": 4, "strides": [2, 2]}),
    ("depthwise", {"MODE": "flat", "TN": 16, "TC": 2}, (1, 4, 9, 9), (4, 1, 5, 5), {"pads": [2] * 4, "group": 4}),
    ("depthwise", {"MODE": "flat", "TN": 8, "TC": 4}, (1, 4, 9, 11), (4, 1, 3, 3),
     {"pads": [2] * 4, "group": 4, "dilations": [2, 2]}),
    *[("conv2d", config, (2, 6, 11, 19), (14, 3, 3, 3), {"pads": [1] * 4, "group": 2, "strides": [1, 2]})
      for config in ({"TM": 8, "TN": 8}, {"TM": 6, "TN": 16, "BCAST": 1}, {"TM": 16, "TN": 4, "BCAST": 1})],
    *[("conv2d", {"MODE": "igemm", **config}, (2, 6, 11, 19), (14, 3, 3, 3),
       {"pads": [1] * 4, "group": 2, "strides": [1, 2]})
      for config in ({"TM": 2, "TN": 2, "WM": 8, "WN": 8, "BK": 8, "SPLIT": 1},
                     {"TM": 4, "TN": 2, "WM": 8, "WN": 16, "BK": 16, "SPLIT": 2},
                     {"TM": 4, "TN": 4, "WM": 16, "WN": 16, "BK": 16, "SPLIT": 4})],  # slices past K: zero sums
    ("conv2d", {"MODE": "igemm", "TM": 2, "TN": 4, "WM": 16, "WN": 8, "BK": 8, "SPLIT": 3}, (1, 20, 9, 10),
     (33, 20, 1, 1), {"strides": [2, 2]}),  # a strided 1x1 (ResNet's downsample) with an odd split
    ("conv2d", {"MODE": "igemm", "TM": 8, "TN": 2, "WM": 8, "WN": 8, "BK": 8, "SPLIT": 2}, (1, 5, 17, 13),
     (9, 5, 5, 3), {"pads": [2, 3, 1, 2], "dilations": [2, 1]}),
    *[("gemm", config, (2, 20, 7, 9), (13, 20, 1, 1), {})
      for config in ({"VEC": "B", "TM": 6, "NV": 1}, {"VEC": "B", "TM": 16, "NV": 4}, {"VEC": "B", "TM": 1, "NV": 2},
                     {"VEC": "N", "TM": 8, "TN": 16}, {"VEC": "M", "TM": 8, "TN": 3},
                     {"VEC": "L", "TM": 4, "TN": 2, "WM": 4, "WN": 8, "BK": 8},
                     {"VEC": "L", "TM": 1, "TN": 4, "WM": 16, "WN": 16, "BK": 16})],
    ("gemm", {"VEC": "L", "TM": 4, "TN": 4, "WM": 8, "WN": 8, "BK": 16}, (1, 37, 21, 23), (70, 37, 1, 1), {}),
    ("gemm", {"VEC": "R", "RG": 8}, (1, 300, 1, 1), (13, 300, 1, 1), {}),  # matrix-vector (a classifier)
    ("gemm", {"VEC": "R", "RG": 32}, (2, 37, 1, 3), (5, 37, 1, 1), {}),
]  # fmt: skip


@pytest.mark.parametrize("has_z", [False, True])
@pytest.mark.parametrize("case", KNOB_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in KNOB_CASES])
def test_every_kernel_variant_matches_numpy(case, has_z):
    """Each mode/knob of the conv templates (as the tuner may pick them) against the NumPy Conv, with batch 2,
    partial blocks, odd channel counts and the residual input Z."""
    from edgeinfer.backends import opencl

    template, config, x_shape, w_shape, extra = case
    kernel = w_shape[2:]
    attrs = {"kernel_shape": list(kernel), "strides": [1, 1], "pads": [0] * 4, "activation": "clip",
             "activation_params": [-1.0, 1.5], **extra}  # fmt: skip
    inputs = {"x": randn(*x_shape)}
    order = ["x", "W", "B"]
    consts = {"W": randn(*w_shape), "B": randn(w_shape[0])}
    if has_z:
        graph, expected = single_node_graph("Conv", inputs, consts, attrs, order)
        inputs["z"] = randn(*expected["y0"].shape)
        order.append("z")
    graph, expected = single_node_graph("Conv", inputs, consts, attrs, order)
    executable = opencl.prepare(graph, DEVICE.spec, overrides={template: dict(config)})
    explained = executable.explain()[0]
    assert explained["placement"] == "device" and explained["kernel"] == template, explained
    assert explained["config_source"] == "override"
    assert rel_l2(executable.run(inputs)["y0"], expected["y0"]) <= 1e-5


def test_conv_with_residual_and_batch():
    x = randn(2, 8, 6, 6)
    z = randn(2, 16, 6, 6)
    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0] * 4, "activation": "relu"}
    explained = check_node("Conv", {"x": x, "z": z}, {"W": randn(16, 8, 1, 1)}, attrs, ["x", "W", "", "z"])
    assert explained["kernel"] == "gemm"
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1] * 4}
    check_node("Conv", {"x": x, "z": z}, {"W": randn(16, 8, 3, 3), "B": randn(16)}, attrs, ["x", "W", "B", "z"])


def test_gemm_and_matmul():
    x = randn(3, 40)
    consts = {"B": randn(24, 40), "C": randn(24)}
    check_node("Gemm", {"x": x}, consts, {"transB": 1, "alpha": 0.5, "beta": 2.0}, ["x", "B", "C"])
    check_node("MatMul", {"x": randn(2, 5, 40)}, {"B": randn(40, 7)}, {}, ["x", "B"])


# ---------------------------------------------------------------- memory-bound ops


@pytest.mark.parametrize(
    "op,attrs",
    [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 0, 0]}),
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [13, 13]}),
        ("GlobalAveragePool", {}),
        ("GlobalMaxPool", {}),
    ],
)
def test_pool(op, attrs):
    check_node(op, {"x": randn(1, 5, 13, 13)}, {}, attrs, ["x"])


@pytest.mark.parametrize(
    "kernel,pads,shape",
    [
        (5, [2, 2, 2, 2], (1, 5, 13, 13)),
        (9, [4, 4, 4, 4], (1, 3, 13, 13)),
        (13, [6, 6, 6, 6], (1, 4, 13, 13)),
        (3, [1, 1, 1, 1], (2, 3, 20, 37)),
        (4, [0, 2, 3, 1], (1, 2, 9, 21)),
        (3, [0, 0, 0, 0], (1, 2, 5, 4)),
    ],
)
@pytest.mark.parametrize("strides,ceil_mode", [([1, 1], 0), ([2, 2], 0), ([2, 2], 1), ([2, 1], 1), ([1, 2], 0)])
def test_max_pool_runs_separably(kernel, pads, shape, strides, ceil_mode):
    """YOLOX's SPP pools, SqueezeNet's 3x3/2 pools: the separable maxpool_rows kernel (row maxima in a shift
    register)."""
    attrs = {"kernel_shape": [kernel, kernel], "strides": strides, "pads": pads, "ceil_mode": ceil_mode}
    explained = check_node("MaxPool", {"x": randn(*shape)}, {}, attrs, ["x"], tol=0.0)
    assert explained["config"]["kernel"] == "maxpool_rows"


def test_slice_of_slice_reads_the_first_input_and_drops_the_unread_slice():
    """YOLOX's Focus: Slice(rows) then Slice(columns) is one strided copy from the graph input; a first Slice
    still read by another node keeps its launch."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl

    x = randn(1, 3, 10, 70)  # 35 output columns: two whole 16-element chunks of strided_copy and a partial one
    ints = {"s0": [0], "s1": [1], "e": [1 << 30], "a2": [2], "a3": [3], "st": [2]}
    constants = {k: np.array(v, np.int64) for k, v in ints.items()}
    shapes = {"x": (1, 3, 10, 70), "r0": (1, 3, 5, 70), "r1": (1, 3, 5, 70), "y0": (1, 3, 5, 35),
              "y1": (1, 3, 5, 35), "y2": (1, 3, 5, 70)}  # fmt: skip
    tensors = {name: TensorInfo(name, shape, "float32") for name, shape in shapes.items()}
    nodes = [
        Node("rows0", "Slice", ["x", "s0", "e", "a2", "st"], ["r0"], {}),
        Node("cols0", "Slice", ["r0", "s1", "e", "a3", "st"], ["y0"], {}),
        Node("rows1", "Slice", ["x", "s1", "e", "a2", "st"], ["r1"], {}),
        Node("cols1", "Slice", ["r1", "s0", "e", "a3", "st"], ["y1"], {}),
        Node("relu", "Relu", ["r1"], ["y2"], {}),
    ]
    graph = Graph(nodes, ["x"], ["y0", "y1", "y2"], tensors, constants)
    executable = opencl.prepare(graph, DEVICE.spec)
    launches = {row["name"]: row["launches"] for row in executable.explain()}
    assert launches == {"rows0": 0, "cols0": 1, "rows1": 1, "cols1": 1, "relu": 1}
    actual, expected = executable.run({"x": x}), numpy_backend.prepare(graph).run({"x": x})
    for name in graph.outputs:
        assert np.array_equal(actual[name], expected[name]), name


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "HardSwish", "LeakyRelu"])
def test_unary(op):
    check_node(op, {"x": randn(3, 7, 11)}, {}, {}, ["x"])


def test_clip():
    bounds = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}
    check_node("Clip", {"x": randn(2, 33)}, bounds, {}, ["x", "lo", "hi"])


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max"])
@pytest.mark.parametrize("b_shape", [(2, 3, 5, 7), (1,), (3, 1, 1), (5, 1)])
def test_binary(op, b_shape):
    b = np.abs(randn(*b_shape)) + 0.5 if op == "Div" else randn(*b_shape)
    check_node(op, {"a": randn(2, 3, 5, 7), "b": b}, {}, {}, ["a", "b"])


def test_binary_with_constant_first_operand():
    check_node("Sub", {"b": randn(4, 6)}, {"a": randn(6)}, {}, ["a", "b"])


def test_data_movement():
    x = randn(2, 3, 4, 5)
    check_node("Transpose", {"x": x}, {}, {"perm": [0, 2, 3, 1]}, ["x"])
    ints = {k: np.array(v, np.int64) for k, v in
            {"starts": [1, -1], "ends": [4, -100], "axes": [2, 3], "steps": [2, -2]}.items()}  # fmt: skip
    check_node("Slice", {"x": x}, ints, {}, ["x", "starts", "ends", "axes", "steps"])
    check_node("Concat", {"x": x, "y": randn(2, 2, 4, 5)}, {"c": randn(2, 1, 4, 5)}, {"axis": 1}, ["x", "c", "y"])
    check_node("Reshape", {"x": x}, {"s": np.array([2, -1], np.int64)}, {}, ["x", "s"])
    check_node("Gather", {"x": x}, {"i": np.array(2, np.int64)}, {"axis": 3}, ["x", "i"])
    check_node("Gather", {"x": x}, {"i": np.array([[0, -1], [1, 1]], np.int64)}, {"axis": 1}, ["x", "i"])
    check_node("Split", {"x": x}, {"s": np.array([1, 3], np.int64)}, {"axis": 2}, ["x", "s"], n_outputs=2)
    check_node("Expand", {"x": randn(3, 1, 5)}, {"s": np.array([2, 3, 4, 5], np.int64)}, {}, ["x", "s"])


def test_gather_by_block_copies_or_per_element():
    """Up to GATHER_AS_COPIES constant indices: one strided copy per index (ShuffleNet's channel split);
    more: the per-element gather kernel."""
    shuffled = randn(2, 1, 24, 5, 7)
    for index in (0, 1, -1):
        explained = check_node("Gather", {"x": shuffled}, {"i": np.array(index, np.int64)}, {"axis": 0}, ["x", "i"])
        assert explained["config"]["kernel"] == "strided_copy"
    x = np.arange(2 * 9 * 3, dtype=np.int64).reshape(2, 9, 3)
    explained = check_node("Gather", {"x": x}, {"i": np.array([8, 0, -2], np.int64)}, {"axis": 1}, ["x", "i"])
    assert explained["config"]["copies"] == 3
    explained = check_node("Gather", {"x": x}, {"i": np.array([1, 2, 3, 4, 5], np.int64)}, {"axis": 1}, ["x", "i"])
    assert explained["config"]["kernel"] == "gather"


def test_constant_pad_is_a_fill_and_a_copy_and_crops_use_the_pad_kernel():
    x = (RNG.integers(0, 255, (1, 3, 4, 5))).astype(np.uint8)
    consts = {"p": np.array([0, 1, 2, 0, 0, 0, 1, 3], np.int64), "v": np.array(7, np.uint8)}
    explained = check_node("Pad", {"x": x}, consts, {"mode": "constant"}, ["x", "p", "v"])
    assert explained["config"]["kernel"] == "fill+strided_copy"
    consts = {"p": np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64), "v": np.array(0.5, np.float32)}
    explained = check_node("Pad", {"x": randn(1, 2, 5, 6)}, consts, {"mode": "constant"}, ["x", "p", "v"])
    assert explained["config"]["kernel"] == "pad"


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    consts = {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "v": np.array(1.5, np.float32)}
    check_node("Pad", {"x": randn(1, 2, 5, 6)}, consts, {"mode": mode}, ["x", "p", "v"])


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "nearest"},
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        {"mode": "linear"},
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    ],
)
def test_resize(attrs):
    scales = {"scales": np.array([1, 1, 2, 2], np.float32)}
    check_node("Resize", {"x": randn(1, 3, 5, 7)}, scales, attrs, ["x", "", "scales"])


@pytest.mark.parametrize(
    "shape,scales,kernel",
    [
        ((1, 3, 5, 20), [1, 1, 2, 2], "upsample_nearest_w2"),
        ((2, 2, 4, 13), [1, 1, 3, 2], "upsample_nearest_w2"),
        ((1, 2, 4, 16), [1, 1, 2, 3], "resize2d"),
        ((1, 2, 4, 16), [1, 1, 1.5, 2], "resize2d"),
    ],
)
def test_nearest_integer_upsampling(shape, scales, kernel):
    """Nearest 2x column upsampling (YOLO necks) takes the vector kernel; other factors the gathering one."""
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    constants = {"scales": np.array(scales, np.float32)}
    explained = check_node("Resize", {"x": randn(*shape)}, constants, attrs, ["x", "", "scales"], tol=0.0)
    assert explained["config"]["kernel"] == kernel


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    check_node("Softmax", {"x": randn(2, 10, 3)}, {}, {"axis": axis}, ["x"])
    check_node("LogSoftmax", {"x": randn(2, 10, 3)}, {}, {"axis": axis}, ["x"])


def test_quantize_dequantize():
    x = randn(4, 50) * 3
    consts = {"s": np.array(0.05, np.float32), "z": np.array(128, np.uint8)}
    check_node("QuantizeLinear", {"x": x}, consts, {}, ["x", "s", "z"])
    q = RNG.integers(0, 256, (4, 50)).astype(np.uint8)
    check_node("DequantizeLinear", {"q": q}, consts, {}, ["q", "s", "z"])


# ---------------------------------------------------------------- devices, cache, configs, profiling


def conv_graph(channels: int = 8) -> tuple[Graph, dict]:
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "activation": "relu"}
    x = randn(1, channels, 12, 12)
    graph, _ = single_node_graph("Conv", {"x": x}, {"W": randn(16, channels, 3, 3)}, attrs, ["x", "W"])
    return graph, {"x": x}


def test_list_devices_and_selection():
    from edgeinfer.backends import opencl
    from edgeinfer.errors import DeviceError

    devices = opencl.list_devices()
    assert all(d.backend == "opencl" and d.device_key and d.spec.startswith("opencl:") for d in devices)
    assert all(d.usable or d.reason for d in devices)
    with pytest.raises(DeviceError, match="no OpenCL device 'opencl:9:9'"):
        opencl.prepare(conv_graph()[0], "opencl:9:9")


def test_second_load_compiles_nothing(tmp_path, monkeypatch):
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import program_cache

    monkeypatch.setenv("EDGEINFER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(program_cache, "_memo", {})
    graph, feeds = conv_graph(channels=5)  # a config no other test builds
    compiled = program_cache.STATS["compiled"]
    first = opencl.prepare(graph, DEVICE.spec).run(feeds)
    assert program_cache.STATS["compiled"] > compiled
    # a binary of ours, or on PoCL (which keeps its builds itself) a marker that the program was built
    keeps = program_cache.driver_keeps_builds(opencl.select_device(DEVICE.spec).device)
    assert list((tmp_path / "opencl").glob("*.built" if keeps else "*.bin"))
    monkeypatch.setattr(program_cache, "_memo", {})  # a new process: only the disk cache remains
    compiled, from_disk = program_cache.STATS["compiled"], program_cache.STATS["from_disk"]
    second = opencl.prepare(graph, DEVICE.spec).run(feeds)
    assert program_cache.STATS["compiled"] == compiled
    assert program_cache.STATS["from_disk"] > from_disk
    np.testing.assert_array_equal(first["y0"], second["y0"])


def test_config_table_lookup_and_explain(tmp_path, monkeypatch):
    from edgeinfer import tuned_configs
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import plans

    table = tuned_configs.ConfigTable("opencl", DEVICE.device_key)
    table.add("conv2d", {"C": 8, "Co": 16, "H": 12, "W": 12, "KH": 3, "KW": 3, "S": 1, "G": 1},
              {"TM": 4, "TN": 4, "local": [1, 1, 1]}, time_ms=0.1)  # fmt: skip
    table.add("conv2d", {"C": 64, "Co": 64, "H": 56, "W": 56, "KH": 3, "KW": 3, "S": 1, "G": 1},
              {"TM": 8, "TN": 8, "local": [2, 1, 1]})  # fmt: skip
    path = tmp_path / "table.json"
    tuned_configs.write_table(table, path)
    table = tuned_configs.read_table(path, "opencl", DEVICE.device_key)
    default = dict
    near = {"C": 16, "Co": 16, "H": 14, "W": 14, "KH": 3, "KW": 3, "S": 1, "G": 1}
    assert table.lookup("conv2d", near, default)[1].startswith("nearest (C=8,")
    assert table.lookup("gemm", {"M": 1, "N": 1, "K": 1}, lambda: {"TM": 1}) == ({"TM": 1}, "default")

    monkeypatch.setattr(plans, "load_table", lambda *args: table)
    graph, feeds = conv_graph()
    executable = opencl.prepare(graph, DEVICE.spec)
    row = executable.explain()[0]
    assert (row["kernel"], row["config_source"], row["config"]["TM"]) == ("conv2d", "tuned", 4)
    _, expected = single_node_graph("Conv", feeds, dict(graph.constants), graph.nodes[0].attrs, ["x", "W"])
    assert rel_l2(executable.run(feeds)["y0"], expected["y0"]) <= 1e-5


def test_data_dir_finds_kernels_and_tables():
    from edgeinfer.tuned_configs import data_dir

    assert (data_dir("kernels") / "opencl" / "gemm.cl").is_file()
    assert (data_dir("tuned_configs") / "opencl").is_dir()


def test_profile_rows():
    from edgeinfer.backends import opencl

    graph, feeds = conv_graph()
    graph.metadata["node_flops"] = {"node": 2 * 16 * 8 * 9 * 144}
    rows = opencl.prepare(graph, DEVICE.spec).profile(feeds, repeat=3)
    node = next(r for r in rows if r["name"] == "node")
    assert node["kernel"] == "conv2d" and node["time_ms"] > 0 and node["gflops"] > 0 and node["gbps"] > 0
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-6


# ---------------------------------------------------------------- placement and fallback, whole models


def topk_gather_model():
    """x -> Conv (device) -> Reshape -> TopK (CPU only) -> Gather with the indices (no kernel: NumPy) ->
    Add with the doubled TopK values (CPU: all its inputs are there) -> Add with a device result -> y."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([4, 64], np.int64), "shape"),
        numpy_helper.from_array(np.array([5], np.int64), "k"),
        numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "table"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("TopK", ["r", "k"], ["values", "indices"], axis=1),
        helper.make_node("Gather", ["table", "indices"], ["picked"], axis=0),
        helper.make_node("Mul", ["values", "two"], ["doubled"]),
        helper.make_node("Add", ["doubled", "picked"], ["s"]),
        helper.make_node("ReduceMax", ["r"], ["peak"], axes=[1], keepdims=1),
        helper.make_node("Add", ["s", "peak"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "topk_gather", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_device_cpu_device_chain_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from edgeinfer.backends import opencl
    from edgeinfer.compiler import compile_model

    model = topk_gather_model()
    x = randn(1, 3, 8, 8)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    executable = opencl.prepare(compile_model(model), DEVICE.spec)
    rows = {row["op"]: row for row in executable.explain()}
    assert rows["Conv"]["placement"] == rows["Add"]["placement"] == "device"
    assert rows["TopK"]["placement"] == rows["Gather"]["placement"] == "cpu"
    assert rows["Gather"]["config_source"] == "numpy fallback: placed on the CPU by the compiler"
    assert rel_l2(executable.run({"x": x})["y"], expected[0]) <= 1e-6


@pytest.mark.parametrize("spin", ["0", "1"])
def test_device_cpu_device_chain_with_and_without_spinning(spin, monkeypatch):
    """The host waits for the device by polling (default) or sleeping; reads before a host step and at the end
    of the run are non-blocking, so both ways must see complete data, over repeated runs."""
    ort = pytest.importorskip("onnxruntime")
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import executor
    from edgeinfer.compiler import compile_model

    monkeypatch.setenv(executor.SPIN_ENV, spin)
    model = topk_gather_model()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    executable = opencl.prepare(compile_model(model), DEVICE.spec)
    assert executable.spin == (spin == "1")
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
        assert rel_l2(executable.run({"x": x})["y"], session.run(None, {"x": x})[0]) <= 1e-6
    monkeypatch.setenv(executor.SPIN_ENV, "yes")
    with pytest.raises(ValueError, match="EDGEINFER_OPENCL_SPIN='yes'"):
        executor.spin_wanted()


@pytest.mark.parametrize("second", ["pointwise", "depthwise", "direct", "pointwise_few_columns"])
@pytest.mark.parametrize("swap", [False, True])
def test_residual_add_after_the_activation_runs_in_the_conv_epilogue(second, swap):
    """YOLOX's bottleneck y = silu(conv(a)) + a: the conv writes y (epilogue has_z 2) and the Add has no launch,
    with the arena plan of the compiler (which puts y where the conv's input was: y then gets its own buffer)."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl
    from edgeinfer.passes.memory_plan import plan_memory

    size = 2 if second == "pointwise_few_columns" else 10
    shape = (1, 8, size, size)
    one = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0] * 4, "activation": "silu"}
    three = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1] * 4, "activation": "silu"}
    attrs, weights = {
        "pointwise": (one, randn(8, 8, 1, 1)),
        "pointwise_few_columns": (one, randn(8, 8, 1, 1)),
        "depthwise": ({**three, "group": 8}, randn(8, 1, 3, 3)),
        "direct": (three, randn(8, 8, 3, 3)),
    }[second]
    tensors = {name: TensorInfo(name, shape, "float32") for name in ("x", "a", "m", "b", "c", "y")}
    nodes = [
        Node("first", "Conv", ["x", "Wa", "Ba"], ["a"], one),
        Node("mid", "Conv", ["a", "Wm"], ["m"], one),
        Node("second", "Conv", ["m", "Wb", "Bb"], ["b"], attrs),
        Node("add", "Add", ["a", "b"] if swap else ["b", "a"], ["c"], {}),
        Node("last", "Conv", ["c", "Wc"], ["y"], one),
    ]
    constants = {"Wa": randn(8, 8, 1, 1), "Ba": randn(8), "Wm": randn(8, 8, 1, 1), "Wb": weights, "Bb": randn(8),
                 "Wc": randn(8, 8, 1, 1)}  # fmt: skip
    graph = Graph(nodes, ["x"], ["y"], tensors, constants)
    plan = plan_memory(graph)
    assert plan.offsets["c"] == plan.offsets["m"]  # the conv's input: c must not stay there
    executable = opencl.prepare(graph, DEVICE.spec)
    assert executable.own_buffers == {"c"}
    rows = {row["name"]: row for row in executable.explain()}
    assert rows["add"]["launches"] == 0 and rows["second"]["config"]["residual_add"] == "add"
    feeds = {"x": randn(*shape)}
    assert rel_l2(executable.run(feeds)["y"], numpy_backend.prepare(graph).run(feeds)["y"]) <= 1e-5


def test_concat_of_device_results_is_zero_copy():
    """Producers computed on the device write straight into the Concat output; a graph input is copied."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl

    # 512-byte channels: every slice is a valid sub-buffer origin on PoCL (128-byte alignment) and on NVIDIA (512)
    x, other = randn(1, 4, 8, 16), randn(1, 2, 8, 16)
    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0] * 4}
    tensors = {name: TensorInfo(name, (1, c, 8, 16), "float32") for name, c in
               {"x": 4, "other": 2, "a": 3, "b": 5, "y": 10}.items()}  # fmt: skip
    nodes = [
        Node("conv_a", "Conv", ["x", "Wa"], ["a"], attrs),
        Node("conv_b", "Conv", ["x", "Wb"], ["b"], {**attrs, "activation": "relu"}),
        Node("concat", "Concat", ["a", "other", "b"], ["y"], {"axis": 1}),
    ]
    graph = Graph(nodes, ["x", "other"], ["y"], tensors, {"Wa": randn(3, 4, 1, 1), "Wb": randn(5, 4, 1, 1)})
    executable = opencl.prepare(graph, DEVICE.spec)
    row = executable.explain()[2]
    assert row["config"] == {"zero_copy_inputs": 2, "copies": 1}
    feeds = {"x": x, "other": other}
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-6


def _conv_chain_graph(channels=(4, 8, 4, 8, 4)):
    """A chain of 1x1 convolutions whose intermediates the memory plan puts at shared arena offsets."""
    from edgeinfer.passes.memory_plan import plan_memory

    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0] * 4}
    names = [f"t{i}" for i in range(len(channels))]
    nodes = [Node(f"conv{i}", "Conv", [names[i], f"w{i}"], [names[i + 1]], attrs) for i in range(len(names) - 1)]
    constants = {f"w{i}": randn(channels[i + 1], channels[i], 1, 1) for i in range(len(names) - 1)}
    tensors = {n: TensorInfo(n, (1, c, 8, 16), "float32") for n, c in zip(names, channels)}
    graph = Graph(nodes, [names[0]], [names[-1]], tensors, constants)
    graph.memory_plan = plan_memory(graph)
    return graph


def test_tensors_at_one_arena_offset_share_one_sub_buffer(monkeypatch):
    """NVIDIA's driver crashes releasing overlapping sub-buffers in some orders (memory.py): the executable
    cuts one sub-buffer per arena origin, sized for the largest tensor placed there."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl

    monkeypatch.setenv("EDGEINFER_OPENCL_ARENA", "1")  # the arena also where it is off by default (NVIDIA)

    graph = _conv_chain_graph()
    offsets = graph.memory_plan.offsets
    shared = [n for n in offsets if list(offsets.values()).count(offsets[n]) > 1]
    assert len(shared) >= 2, offsets  # the test needs two intermediates at one offset
    executable = opencl.prepare(graph, DEVICE.spec)
    by_offset = {}
    for name in shared:
        by_offset.setdefault(offsets[name], set()).add(executable.buffers[name].int_ptr)
    if executable.memory.guard % executable.memory.align == 0 and all(
        (executable.memory.guard + o) % executable.memory.align == 0 for o in by_offset
    ):  # fmt: skip
        assert all(len(handles) == 1 for handles in by_offset.values())
        largest = max(graph.tensors[n].nbytes for n in shared if offsets[n] == offsets[shared[0]])
        assert executable.buffers[shared[0]].size >= largest
    feeds = {"t0": randn(1, 4, 8, 16)}
    expected = numpy_backend.prepare(graph).run(feeds)["t4"]
    assert rel_l2(executable.run(feeds)["t4"], expected) <= 1e-5


def test_allocator_releases_sub_buffers_newest_first_then_parents():
    from edgeinfer.backends.opencl.memory import GuardedAllocator
    from edgeinfer.backends.opencl.runtime import select_device

    device = select_device(DEVICE.spec)
    memory = GuardedAllocator(device.context, device.device)
    arena = memory.arena(4096, {0: 2048})
    first = memory.in_arena(arena, 0, 1024)
    assert memory.in_arena(arena, 0, 2048) is first and first.size == 2048 + memory.guard  # one per origin
    memory.tensor(512)
    released = []

    class Spy:
        def __init__(self, name):
            self.name = name

        def release(self):
            released.append(self.name)

    real = [*reversed(memory.views), *memory.parents]  # released below in the same order
    memory.views = [Spy("view0"), Spy("view1")]
    memory.parents = [Spy("parent0"), Spy("parent1")]
    memory.release()
    assert released == ["view1", "view0", "parent0", "parent1"]
    for buffer in real:
        buffer.release()


def test_close_releases_the_device_objects():
    from edgeinfer.backends import opencl

    graph = _conv_chain_graph()
    executable = opencl.prepare(graph, DEVICE.spec)
    feeds = {"t0": randn(1, 4, 8, 16)}
    before = executable.run(feeds)["t4"]
    memory = executable.memory
    assert memory.views and memory.parents
    executable.close()
    assert not memory.views and not memory.parents and not executable.steps
    executable.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        executable.run(feeds)
    again = opencl.prepare(graph, DEVICE.spec)  # the context stays usable
    np.testing.assert_array_equal(again.run(feeds)["t4"], before)
    del again  # __del__ closes


SHARED = Path(os.environ.get("EDGEINFER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MODELS = [
    "squeezenet1.1.onnx",
    "mobilenet_v2_1.0_224.onnx",
    "mobilenet_v1_0.25_128.onnx",
    "mobilenet_v2_1.0_224_qdq_uint8.onnx",
    "yolox_nano_416.onnx",
    "fastestdet_352.onnx",
    "ultraface_rfb_320.onnx",
]


@pytest.mark.parametrize("layout", ["nchw16c", "nchw"])
@pytest.mark.parametrize("file", MODELS)
def test_shared_model_matches_onnxruntime(file, layout, monkeypatch):
    """Every node on the device and relative L2 <= 1e-4 against onnxruntime. onnxruntime's graph
    optimisations are off: for the QDQ model they would fuse into integer kernels that round differently
    from the ONNX definition (DequantizeLinear -> float Conv -> QuantizeLinear) that edgeinfer follows."""
    ort = pytest.importorskip("onnxruntime")
    from edgeinfer.backends import opencl
    from edgeinfer.compiler import compile_model

    path = SHARED / "models" / file
    if not path.exists():
        pytest.skip(f"{path} not found (set EDGEINFER_SHARED to the folder holding models/)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = compile_model(path)
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = graph.tensors[spec.name].shape
        feeds[spec.name] = (rng.integers(0, 256, shape).astype(np.uint8) if "uint8" in spec.type
                            else rng.uniform(0, 1, shape).astype(np.float32))  # fmt: skip
    expected = session.run(None, feeds)
    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", layout)
    executable = opencl.prepare(graph, DEVICE.spec)
    fallbacks = [(row["name"], row["config_source"]) for row in executable.explain() if row["placement"] != "device"]
    assert not fallbacks, fallbacks
    actual = executable.run(feeds)
    for spec, value in zip(session.get_outputs(), expected):
        assert rel_l2(actual[spec.name], value) <= 1e-4, (spec.name, rel_l2(actual[spec.name], value))


@pytest.mark.parametrize("layout", ["nchw16c", "nchw"])
@pytest.mark.parametrize("file", MODELS)
def test_shared_model_with_nan_filled_memory(file, layout, monkeypatch):
    """Every device buffer starts as NaN bit patterns (0xFF bytes), as uninitialised GPU memory may: a kernel
    that lets memory outside its tensor (guard bands, neighbouring arena tensors) reach an output through
    arithmetic (``0 * x`` instead of ``select``) shows it here, on PoCL, whose memory is rarely NaN."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import memory
    from edgeinfer.compiler import compile_model

    path = SHARED / "models" / file
    if not path.exists():
        pytest.skip(f"{path} not found (set EDGEINFER_SHARED to the folder holding models/)")
    graph = compile_model(path)
    monkeypatch.setenv("EDGEINFER_OPENCL_LAYOUT", layout)
    rng = np.random.default_rng(1)
    feeds = {}
    for name in graph.inputs:
        info = graph.tensors[name]
        feeds[name] = (rng.integers(0, 256, info.shape).astype(np.uint8) if info.dtype == "uint8"
                       else rng.uniform(0, 1, info.shape).astype(np.float32))  # fmt: skip
    clean = opencl.prepare(graph, DEVICE.spec).run(feeds)  # the same kernels on zero-filled PoCL memory
    expected = numpy_backend.prepare(graph).run(feeds)
    monkeypatch.setattr(memory, "FILL_BYTE", 0xFF)
    executable = opencl.prepare(graph, DEVICE.spec)
    for _ in range(2):  # the second run also sees the first run's leftovers
        actual = executable.run(feeds)
        for name in graph.outputs:
            np.testing.assert_array_equal(actual[name], clean[name], err_msg=name)  # bit for bit
            if actual[name].dtype == np.uint8:  # the QDQ model: a uint8 output moves in whole steps when the
                # float accumulation order differs (NumPy vs onnxruntime differ as much), see the classification test
                assert np.abs(actual[name].astype(int) - expected[name].astype(int)).max() <= 4, name
            else:
                assert rel_l2(actual[name], expected[name]) <= 1e-4, (name, rel_l2(actual[name], expected[name]))
    executable.close()


def test_sub_buffers_hold_the_guard_bands_the_kernels_read():
    """NVIDIA faults on reads outside the sub-buffer a kernel is given (memory.py): every tensor's sub-buffer
    reaches the guard past its end, and the window kernels' input gets one that starts the guard before it."""
    import pyopencl as cl

    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl
    from edgeinfer.planning.plan import GuardedTensorArg

    x = randn(1, 3, 12, 12)
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    tensors = {name: TensorInfo(name, (1, 3, 12, 12), "float32") for name in ("x", "a", "b", "c", "y")}
    nodes = [
        Node("dw", "Conv", ["x", "Wd"], ["a"], {**attrs, "group": 3}),
        Node("conv", "Conv", ["a", "Wc"], ["b"], attrs),
        Node("pool", "MaxPool", ["b"], ["c"], attrs),
        Node("flat", "Reshape", ["c", "shape"], ["y"], {}),
    ]
    constants = {"Wd": randn(3, 1, 3, 3), "Wc": randn(3, 3, 3, 3), "shape": np.array([1, 3, 12, 12], np.int64)}
    graph = Graph(nodes, ["x"], ["y"], tensors, constants)
    executable = opencl.prepare(graph, DEVICE.spec)
    guard = executable.memory.guard
    for name, buffer in executable.buffers.items():
        if name in graph.constants:
            continue
        parent = buffer.get_info(cl.mem_info.ASSOCIATED_MEMOBJECT)
        origin = buffer.get_info(cl.mem_info.OFFSET)
        assert origin >= guard and buffer.size >= graph.tensors[name].nbytes + guard, name
        assert origin + buffer.size <= parent.size
    guarded = {a.name for r in executable.records if r.plan for launch in r.plan.launches if hasattr(launch, "args")
               for a in launch.args if isinstance(a, GuardedTensorArg)}  # fmt: skip
    assert guarded == {"x", "a", "b"}
    # Reshape runs as a copy kernel (clEnqueueCopyBuffer between sub-buffers corrupted tensors on NVIDIA).
    assert [s.kind for s in executable.steps if s.node_index == 3] == ["copy"]
    feeds = {"x": x}
    assert rel_l2(executable.run(feeds)["y"], numpy_backend.prepare(graph).run(feeds)["y"]) <= 1e-5


def test_executables_share_one_queue_per_context():
    """Per-executable queues exhausted NVIDIA's driver with ~64 executables alive (the tuner)."""
    from edgeinfer.backends import opencl

    graph = _conv_chain_graph()
    first, second = opencl.prepare(graph, DEVICE.spec), opencl.prepare(graph, DEVICE.spec)
    assert first.queue is second.queue
    feeds = {"t0": randn(1, 4, 8, 16)}
    first.profile(feeds, repeat=1)
    second.profile(feeds, repeat=1)
    assert first._profiling_queue is second._profiling_queue
    np.testing.assert_array_equal(first.run(feeds)["t4"], second.run(feeds)["t4"])


def limit_kernel_work_groups(monkeypatch, limit: int) -> None:
    """Every compiled kernel reports at most ``limit`` work-items per group (as NVIDIA does for register-heavy
    kernels)."""
    original = cl.Kernel.get_work_group_info

    def limited(self, param, device):
        if param == cl.kernel_work_group_info.WORK_GROUP_SIZE:
            return limit
        return original(self, param, device)

    monkeypatch.setattr(cl.Kernel, "get_work_group_info", limited)


def test_local_size_shrinks_to_the_kernel_work_group_limit(monkeypatch):
    """A kernel's own work-group limit (register use: NVIDIA answers CL_OUT_OF_RESOURCES at enqueue above
    it) can be below the device maximum the planner used: the executable shrinks the local size to fit."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl

    limit_kernel_work_groups(monkeypatch, 2)
    graph = _conv_chain_graph()
    executable = opencl.prepare(graph, DEVICE.spec)
    for record in executable.records:
        for launch in record.plan.launches:
            assert int(np.prod(launch.local)) <= 2
    feeds = {"t0": randn(1, 4, 8, 16)}
    assert rel_l2(executable.run(feeds)["t4"], numpy_backend.prepare(graph).run(feeds)["t4"]) <= 1e-5


def test_programs_get_correctly_rounded_division_where_offered(monkeypatch):
    """NVIDIA's default 2.5-ulp division flipped QuantizeLinear roundings (QDQ MobileNetV2 at rel L2 0.124 on
    the H100): every program asks for correctly rounded division when the device offers it."""
    import pyopencl as cl

    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.backends.opencl.runtime import build_flags

    seen = []
    original = program_cache.build_program
    monkeypatch.setattr(program_cache, "build_program", lambda *a: seen.append(a[4]) or original(*a))
    executable = opencl.prepare(_conv_chain_graph(), DEVICE.spec)
    flag = build_flags(executable.device.device)
    offered = executable.device.device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT
    assert (flag == "-cl-fp32-correctly-rounded-divide-sqrt") == bool(offered)
    assert seen and all(flag in options for options in seen)


@pytest.mark.parametrize("arena", ["0", "1"])
def test_buffer_per_tensor_or_arena_give_the_same_results(monkeypatch, arena):
    """memory.use_arena: NVIDIA gets a buffer per tensor (enqueues on overlapping sub-buffers are slow there),
    other drivers the memory plan's arena; both must compute the same thing."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl

    monkeypatch.setenv("EDGEINFER_OPENCL_ARENA", arena)
    graph = _conv_chain_graph()
    executable = opencl.prepare(graph, DEVICE.spec)
    assert executable.uses_arena == (arena == "1")
    planned = [name for name in graph.memory_plan.offsets if name in executable.buffers]
    assert planned
    arena_parents = {executable.buffers[name].get_info(cl.mem_info.ASSOCIATED_MEMOBJECT).int_ptr for name in planned}
    assert len(arena_parents) == (1 if arena == "1" else len(planned))
    first, last = graph.inputs[0], graph.outputs[0]
    feeds = {first: randn(*graph.tensors[first].shape)}
    assert rel_l2(executable.run(feeds)[last], numpy_backend.prepare(graph).run(feeds)[last]) <= 1e-5


def test_arena_is_off_on_nvidia_only_unless_forced(monkeypatch):
    from types import SimpleNamespace

    from edgeinfer.backends.opencl.memory import use_arena

    def device(vendor):
        return SimpleNamespace(platform=SimpleNamespace(vendor=vendor))

    monkeypatch.delenv("EDGEINFER_OPENCL_ARENA", raising=False)
    assert not use_arena(device("NVIDIA Corporation"))
    assert use_arena(device("The pocl project")) and use_arena(device("Intel(R) Corporation"))
    monkeypatch.setenv("EDGEINFER_OPENCL_ARENA", "1")
    assert use_arena(device("NVIDIA Corporation"))
    monkeypatch.setenv("EDGEINFER_OPENCL_ARENA", "0")
    assert not use_arena(device("The pocl project"))
    monkeypatch.setenv("EDGEINFER_OPENCL_ARENA", "yes")
    with pytest.raises(ValueError, match="EDGEINFER_OPENCL_ARENA must be 0, 1 or unset, got 'yes'"):
        use_arena(device("The pocl project"))


def test_local_gemm_needs_its_whole_work_group_or_gives_way(monkeypatch):
    """gemm_local's tiles are sized by its work-group; where the compiled kernel allows fewer work-items (as
    NVIDIA reports for register-heavy kernels), the planner takes small register tiles instead of shrinking."""
    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl

    limit_kernel_work_groups(monkeypatch, 64)
    graph = _conv_chain_graph()
    tiles = {"VEC": "L", "TM": 2, "TN": 2, "WM": 16, "WN": 16, "BK": 8}
    executable = opencl.prepare(graph, DEVICE.spec, overrides={"gemm": tiles})
    rows = executable.explain()
    assert all(row["config"]["VEC"] == "N" and row["config_source"].startswith("default (gemm_local") for row in rows)
    executable_small = opencl.prepare(graph, DEVICE.spec, overrides={"gemm": {**tiles, "WM": 8, "WN": 8}})
    assert all(row["config"]["VEC"] == "L" for row in executable_small.explain())
    feeds = {"t0": randn(1, 4, 8, 16)}
    expected = numpy_backend.prepare(graph).run(feeds)["t4"]
    for prepared in (executable, executable_small):
        assert rel_l2(prepared.run(feeds)["t4"], expected) <= 1e-5


@pytest.mark.parametrize("config", [{}, {"WG": 16}, {"WG": 64}])
@pytest.mark.parametrize("op,shape,axis", [("Softmax", (2, 1001), -1), ("LogSoftmax", (2, 300, 3), 1)])
def test_softmax_kernels(op, shape, axis, config):
    """softmax (a work-item per line) and softmax_group (a work-group per line, the GPU default for long lines)."""
    from edgeinfer.backends import opencl

    x = randn(*shape) * 5
    graph, expected = single_node_graph(op, {"x": x}, {}, {"axis": axis}, ["x"])
    executable = opencl.prepare(graph, DEVICE.spec, overrides={"softmax": config})
    assert executable.explain()[0]["config"]["kernel"] == ("softmax_group" if config else "softmax")
    # exp turns the float32 rounding of x - max (up to ~2e-6 absolute for |x| ~ 20) into that relative error
    assert rel_l2(executable.run({"x": x})["y0"], expected["y0"]) <= 1e-5


def test_a_nearest_config_lends_tile_sizes_not_its_kernel():
    """A 1x1 conv with one pixel must not inherit gemm_bcast from the table's only (many-pixel) entry."""
    from edgeinfer.planning import PlanContext, plan_node
    from edgeinfer.tuned_configs import ConfigTable

    table = ConfigTable("opencl", "test")
    table.add("gemm", {"M": 16, "N": 3136, "K": 32}, {"VEC": "B", "TM": 8, "NV": 2, "local": [1, 1, 1]})
    table.add("gemm", {"M": 64, "N": 2, "K": 256}, {"VEC": "M", "TM": 16, "TN": 2, "UNROLL_K": 4})

    def planned(pixels, channels):
        attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0] * 4}
        graph, _ = single_node_graph("Conv", {"x": randn(1, 32, 1, pixels)}, {"W": randn(channels, 32, 1, 1)}, attrs,
                                     ["x", "W"])  # fmt: skip
        result = plan_node(graph.nodes[0], PlanContext(graph, table, "cpu", 4096))
        return result.config, result.config_source

    config, source = planned(1, 1000)  # nearest entry by size: the 2-column one, same kernel family
    assert config["VEC"] == "M" and source.startswith("nearest")
    table.entries["gemm"].pop("K=256,M=64,N=2")
    config, source = planned(1, 1000)  # only the many-pixel entry left: the default instead
    assert config["VEC"] == "M" and "another kernel" in source
    config, source = planned(3000, 16)
    assert config["VEC"] == "B" and source.startswith("nearest")


def test_views_in_the_arena_skip_their_copy(tmp_path, monkeypatch):
    """A Reshape/Flatten chain between convolutions (ShuffleNet's channel shuffle) shares its input's bytes in
    the memory plan: with the arena the executor drops those copies, without it (NVIDIA) it keeps them."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeinfer.backends import numpy as numpy_backend
    from edgeinfer.backends import opencl
    from edgeinfer.compiler import compile_model

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), name) for name in "WV"]
    inits += [numpy_helper.from_array(np.array(s, np.int64), n) for n, s in (("s1", [4, 2, 36]), ("s2", [1, 8, 6, 6]))]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["c", "s1"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["t", "s2"], ["u"]),
        helper.make_node("Relu", ["c"], ["k"]),  # reads c after the view of it was made
        helper.make_node("Conv", ["u", "V"], ["d"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["d", "k"], ["y"]),
    ]
    proto = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], inits)  # fmt: skip
    onnx.save(helper.make_model(proto, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    graph = compile_model(tmp_path / "m.onnx")
    feeds = {"x": randn(1, 8, 6, 6)}
    expected = numpy_backend.prepare(graph).run(feeds)["y"]
    for arena in ("1", "0"):
        monkeypatch.setenv("EDGEINFER_OPENCL_ARENA", arena)
        executable = opencl.prepare(graph, DEVICE.spec)
        views = [step for step in executable.steps if step.label == "view"]
        # Arena offsets are multiples of 256 bytes: valid sub-buffer origins on PoCL (128-byte alignment); on
        # NVIDIA (512) some tensors get their own buffer instead, and their copies stay.
        origins_valid = graph.memory_plan.alignment % executable.memory.align == 0
        assert len(views) == (0 if arena == "0" else 2 if origins_valid else len(views))
        assert rel_l2(executable.run(feeds)["y"], expected) <= 1e-5
