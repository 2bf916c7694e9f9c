"""Conv, ConvTranspose, pools, Gemm/MatMul and the shared activations against onnxruntime.

Each case is a one-node ONNX model (opset 17) run by onnxruntime; the NumPy op must agree to ~1e-5
relative and keep the input dtype. Shapes are small so that the whole file runs in a few seconds, but
they reach every dispatch path of ``ops/conv.py`` (pointwise with and without the folded bias, narrow
stem im2col, general im2col, depthwise, grouped, strided/dilated/padded, 1-D and 3-D).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from edgeinfer.activations import FUSED as ACTIVATIONS  # noqa: E402
from edgeinfer.ops import OPS  # noqa: E402
from edgeinfer.ops.activations import apply_activation  # noqa: E402

ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def _model(op: str, inputs: list[np.ndarray], attrs: dict, n_out: int) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(inputs))]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    dtype = ONNX_TYPES[inputs[0].dtype]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, ONNX_TYPES[a.dtype], a.shape) for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info(o, dtype if i == 0 else TensorProto.INT64, None) for i, o in enumerate(outs)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def onnxruntime_run(op: str, inputs: list[np.ndarray], attrs: dict, n_out: int = 1) -> list[np.ndarray]:
    model = _model(op, inputs, attrs, n_out)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {f"in{i}": a for i, a in enumerate(inputs)})


def reference_run(op: str, inputs: list[np.ndarray], attrs: dict, n_out: int = 1) -> list[np.ndarray]:
    """The ONNX reference evaluator: the spec where onnxruntime differs or lacks a dtype."""
    return ReferenceEvaluator(_model(op, inputs, attrs, n_out)).run(None, {f"in{i}": a for i, a in enumerate(inputs)})


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= rtol * scale, f"max abs error {err:.3g} (scale {scale:.3g})"


def run_op(op: str, inputs: list[np.ndarray | None], attrs: dict) -> list[np.ndarray]:
    return OPS[op].fn(list(inputs), dict(attrs))


def rand(rng: np.random.Generator, *shape: int, dtype: type = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


# (input NCHW, weight shape, attrs, with bias): one per dispatch path plus the awkward corners
CONV_CASES = [
    ((1, 8, 9, 10), (12, 8, 1, 1), {}, True),  # pointwise, bias folded into the sgemm (output > input)
    ((2, 16, 5, 6), (4, 16, 1, 1), {}, True),  # pointwise, bias pass, batch 2
    ((1, 8, 9, 10), (6, 4, 1, 1), {"group": 2}, False),  # grouped pointwise
    ((1, 8, 9, 11), (5, 8, 1, 1), {"strides": [2, 2]}, True),  # strided 1x1: one plane, no im2col
    ((1, 3, 17, 15), (16, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}, True),  # narrow stem
    ((1, 3, 16, 16), (8, 3, 3, 3), {"strides": [2, 2]}, False),  # narrow stem, no bias
    ((1, 8, 11, 13), (6, 8, 3, 3), {"pads": [1, 1, 1, 1]}, True),  # general im2col
    ((2, 8, 11, 13), (6, 4, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 3], "dilations": [2, 1], "group": 2}, True),
    ((1, 6, 12, 12), (4, 6, 5, 5), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, False),
    ((1, 8, 11, 13), (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 8}, True),  # depthwise
    ((1, 8, 12, 12), (8, 1, 3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2], "group": 8}, True),  # depthwise s2
    ((2, 8, 11, 13), (16, 1, 3, 3), {"pads": [1, 0, 1, 1], "strides": [2, 2], "group": 8}, False),  # multiplier 2
    ((1, 4, 9, 9), (4, 1, 5, 5), {"pads": [4, 4, 4, 4], "dilations": [2, 2], "group": 4}, True),
    ((1, 5, 10, 11), (7, 5, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ((1, 5, 10, 11), (7, 5, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}, True),
    ((1, 5, 10, 11), (7, 5, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}, True),
    ((1, 5, 4, 4), (3, 5, 3, 3), {"pads": [1, 1, 1, 1], "strides": [3, 3]}, True),  # windows past the edge
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,with_bias", CONV_CASES)
def test_conv_2d(x_shape: tuple, w_shape: tuple, attrs: dict, with_bias: bool) -> None:
    rng = np.random.default_rng(hash((x_shape, w_shape)) % 2**32)
    inputs = [rand(rng, *x_shape), rand(rng, *w_shape)] + ([rand(rng, w_shape[0])] if with_bias else [])
    want = onnxruntime_run("Conv", inputs, attrs)[0]
    assert_close(run_op("Conv", inputs, attrs)[0], want)
    assert_close(run_op("Conv", inputs, attrs)[0], want)  # again: cached scratch buffers must not leak state


@pytest.mark.parametrize(
    "x_shape,w_shape,attrs",
    [
        ((2, 6, 17), (4, 3, 3), {"pads": [1, 2], "strides": [2], "group": 2}),
        ((1, 4, 5, 6, 7), (6, 2, 3, 2, 3), {"pads": [1, 0, 1, 1, 1, 0], "group": 2, "strides": [1, 2, 1]}),
        ((1, 3, 6, 5, 4), (2, 3, 2, 2, 2), {"dilations": [2, 1, 1], "pads": [1, 0, 1, 1, 0, 0]}),
        ((1, 3, 6, 5, 4), (2, 3, 2, 3, 2), {"strides": [2, 1, 2], "auto_pad": "SAME_UPPER"}),
    ],
)
def test_conv_1d_3d(x_shape: tuple, w_shape: tuple, attrs: dict) -> None:
    rng = np.random.default_rng(1)
    inputs = [rand(rng, *x_shape), rand(rng, *w_shape), rand(rng, w_shape[0])]
    assert_close(run_op("Conv", inputs, attrs)[0], onnxruntime_run("Conv", inputs, attrs)[0])


def test_conv_float64_stays_float64() -> None:
    rng = np.random.default_rng(2)
    inputs = [rand(rng, 1, 4, 7, 7, dtype=np.float64), rand(rng, 4, 1, 3, 3, dtype=np.float64)]
    attrs = {"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 2]}
    got = run_op("Conv", inputs, attrs)[0]
    assert got.dtype == np.float64
    assert_close(got, reference_run("Conv", inputs, attrs)[0], rtol=1e-12)


ACTIVATION_PARAMS = {"leaky_relu": [0.1], "clip": [-0.5, 0.7], "hard_sigmoid": [0.3, 0.4]}


def reference_activation(x: np.ndarray, name: str, params: list[float]) -> np.ndarray:
    x = x.astype(np.float64)
    sigmoid = 1 / (1 + np.exp(-x))
    return {
        "relu": lambda: np.maximum(x, 0),
        "leaky_relu": lambda: np.where(x < 0, params[0] * x, x),
        "clip": lambda: np.clip(x, params[0], params[1]),
        "sigmoid": lambda: sigmoid,
        "hard_sigmoid": lambda: np.clip(params[0] * x + params[1], 0, 1),
        "hard_swish": lambda: x * np.clip(x / 6 + 0.5, 0, 1),
        "silu": lambda: x * sigmoid,
        "tanh": lambda: np.tanh(x),
    }[name]()


FUSED_CASES = [
    ((6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),  # depthwise: activation on the trimming copy
    ((6, 6, 1, 1), {}),  # pointwise
    ((6, 6, 3, 3), {"pads": [1, 1, 1, 1]}),  # im2col, bias folded
    ((6, 6, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # im2col, bias added on the trimming copy
    ((60, 6, 2, 2), {"pads": [0, 0, 1, 1]}),  # narrow im2col
]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_conv(activation: str) -> None:
    """``act(conv(X, W) + B + Z)`` on every path, with and without bias and residual."""
    rng = np.random.default_rng(3)
    params = ACTIVATION_PARAMS.get(activation, [])
    for w_shape, attrs in FUSED_CASES:
        x, w, b = rand(rng, 1, 6, 8, 9), rand(rng, *w_shape), rand(rng, w_shape[0])
        plain = onnxruntime_run("Conv", [x, w, b], attrs)[0]
        z = rand(rng, *plain.shape)
        fused = dict(attrs, activation=activation, activation_params=params)
        for bias, residual in [(b, z), (b, None), (None, z), (None, None)]:
            want = plain - (0 if bias is not None else b[:, None, None]) + (0 if residual is None else residual)
            want = reference_activation(want, activation, params).astype(np.float32)
            assert_close(run_op("Conv", [x, w, bias, residual], fused)[0], want)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_apply_activation_in_place_keeps_dtype(name: str) -> None:
    params = ACTIVATION_PARAMS.get(name, [])
    for dtype in (np.float32, np.float64):
        x = np.linspace(-100, 100, 401).astype(dtype)
        want = reference_activation(x, name, params)
        out = apply_activation(x, name, params)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
        same = apply_activation(x, name, params, out=x)
        assert same is x
        np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)


def test_apply_activation_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="gelu"):
        apply_activation(np.zeros(3, np.float32), "gelu", [])


CONV_TRANSPOSE_CASES = [
    ((1, 8, 5, 6), (8, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}),
    ((2, 8, 5, 6), (8, 2, 3, 2), {"strides": [2, 1], "dilations": [1, 2], "group": 2}),
    ((1, 4, 5, 5), (4, 2, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 10], "auto_pad": "SAME_UPPER"}),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 7), (3, 2, 3), {"strides": [3], "pads": [1, 0]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose(x_shape: tuple, w_shape: tuple, attrs: dict) -> None:
    rng = np.random.default_rng(4)
    inputs = [rand(rng, *x_shape), rand(rng, *w_shape), rand(rng, w_shape[1] * attrs.get("group", 1))]
    assert_close(run_op("ConvTranspose", inputs, attrs)[0], onnxruntime_run("ConvTranspose", inputs, attrs)[0])


def test_conv_transpose_output_shape() -> None:
    rng = np.random.default_rng(5)
    inputs = [rand(rng, 1, 2, 4, 5), rand(rng, 2, 3, 3, 3)]
    attrs = {"strides": [3, 2], "output_shape": [10, 8]}  # total padding 2 rows (1 + 1), 3 columns (2 + 1)
    assert_close(run_op("ConvTranspose", inputs, attrs)[0], onnxruntime_run("ConvTranspose", inputs, attrs)[0])


POOL_CASES = [
    ({"kernel_shape": [3, 3], "strides": [2, 2]}, (1, 6, 13, 13)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (2, 4, 12, 14)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 0, 1, 1]}, (1, 4, 11, 13)),
    ({"kernel_shape": [2, 3], "strides": [1, 2], "dilations": [2, 2], "ceil_mode": 1}, (1, 3, 11, 13)),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, (1, 3, 7, 8)),
    ({"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 3, 7, 8)),
    ({"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER"}, (1, 3, 7, 8)),
    ({"kernel_shape": [7, 7]}, (1, 16, 7, 7)),  # single window
    ({"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, (1, 3, 10)),
    ({"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "ceil_mode": 1}, (1, 2, 5, 6, 7)),
]


@pytest.mark.parametrize("attrs,x_shape", POOL_CASES)
def test_max_pool_with_indices(attrs: dict, x_shape: tuple) -> None:
    x = rand(np.random.default_rng(6), *x_shape)
    want_y, want_i = onnxruntime_run("MaxPool", [x], attrs, n_out=2)
    got_y, got_i = run_op("MaxPool", [x], dict(attrs, num_outputs=2))
    assert_close(got_y, want_y)
    np.testing.assert_array_equal(got_i, want_i)
    assert len(run_op("MaxPool", [x], attrs)) == 1


def test_max_pool_indices_column_major() -> None:
    x = rand(np.random.default_rng(7), 2, 3, 6, 5)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 1], "storage_order": 1}
    want = reference_run("MaxPool", [x], attrs, n_out=2)[1]
    np.testing.assert_array_equal(run_op("MaxPool", [x], dict(attrs, num_outputs=2))[1], want)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("attrs,x_shape", POOL_CASES)
def test_average_pool(attrs: dict, x_shape: tuple, count_include_pad: int) -> None:
    if "dilations" in attrs:
        pytest.skip("AveragePool has dilations only from opset 19")
    x = rand(np.random.default_rng(8), *x_shape)
    attrs = dict(attrs, count_include_pad=count_include_pad)
    assert_close(run_op("AveragePool", [x], attrs)[0], onnxruntime_run("AveragePool", [x], attrs)[0])


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("x_shape", [(2, 5, 7, 6), (1, 3, 8), (1, 2, 3, 4, 5)])
def test_global_pools(op: str, x_shape: tuple) -> None:
    x = rand(np.random.default_rng(9), *x_shape)
    assert_close(run_op(op, [x], {})[0], onnxruntime_run(op, [x], {})[0])


@pytest.mark.parametrize(
    "a_shape,b_shape,c_shape,attrs",
    [
        ((4, 5), (5, 6), None, {}),
        ((5, 4), (6, 5), (6,), {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}),
        ((4, 5), (6, 5), (4, 1), {"transB": 1, "beta": 0.0}),
        ((4, 5), (5, 6), (4, 6), {"alpha": 1.5}),
    ],
)
def test_gemm(a_shape: tuple, b_shape: tuple, c_shape: tuple | None, attrs: dict) -> None:
    rng = np.random.default_rng(10)
    inputs = [rand(rng, *a_shape), rand(rng, *b_shape)] + ([rand(rng, *c_shape)] if c_shape else [])
    assert_close(run_op("Gemm", inputs, attrs)[0], onnxruntime_run("Gemm", inputs, attrs)[0])


@pytest.mark.parametrize(
    "a_shape,b_shape", [((3, 4), (4, 5)), ((4,), (4, 5)), ((2, 3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2))]
)
def test_matmul(a_shape: tuple, b_shape: tuple) -> None:
    rng = np.random.default_rng(11)
    inputs = [rand(rng, *a_shape), rand(rng, *b_shape)]
    assert_close(run_op("MatMul", inputs, {})[0], onnxruntime_run("MatMul", inputs, {})[0])
    doubles = [a.astype(np.float64) for a in inputs]
    assert run_op("MatMul", doubles, {})[0].dtype == np.float64
