"""The channels-last kernels of the NumPy backend give the NCHW reference's results (conv, MaxPool, Concat)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.backends.numpy.kernels import NodeState, concat, conv, max_pool
from edgeinfer.backends.numpy.layout import is_channels_last
from edgeinfer.ops import OPS

CONVS = [  # (N, C, H, W, M, kernel, stride, pad, dilation, group)
    (1, 16, 12, 12, 96, 1, 1, 0, 1, 1),  # expansion: bias folded into the sgemm
    (2, 96, 9, 9, 24, 1, 1, 0, 1, 1),  # projection, two images
    (1, 8, 11, 13, 8, 3, 1, 1, 1, 8),  # depthwise
    (1, 8, 11, 13, 8, 3, 2, 1, 1, 8),  # depthwise, stride 2
    (2, 6, 10, 10, 6, 3, 1, 2, 2, 6),  # depthwise, dilated
    (1, 3, 15, 15, 16, 3, 2, 0, 1, 1),  # stem
    (1, 8, 9, 7, 12, 3, 1, 1, 1, 1),  # 3x3 group 1
    (1, 4, 9, 9, 4, 5, 1, 2, 1, 1),  # 5x5
    (1, 8, 9, 9, 8, 3, 1, 1, 1, 2),  # grouped: falls back to NCHW
    (1, 4, 9, 9, 8, 3, 1, 1, 1, 4),  # depthwise with a multiplier: falls back to NCHW
]


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("case", CONVS, ids=str)
@pytest.mark.parametrize("nhwc_input", [False, True])
def test_conv_channels_last_matches_nchw(case: tuple, nhwc_input: bool) -> None:
    n, c, h, w, m, k, s, p, d, g = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((m, c // g, k, k), dtype=np.float32)
    bias = rng.standard_normal(m, dtype=np.float32)
    attrs = {"group": g, "strides": [s, s], "pads": [p] * 4, "dilations": [d, d], "kernel_shape": [k, k],
             "activation": "clip", "activation_params": [-1.0, 1.0]}  # fmt: skip
    expected = OPS["Conv"].fn([x, weight, bias], attrs)[0]
    z = rng.standard_normal(expected.shape, dtype=np.float32)
    expected = OPS["Conv"].fn([x, weight, bias, z], attrs)[0]
    xin, zin = (channels_last(x), channels_last(z)) if nhwc_input else (x, z)
    got = conv([xin, weight, bias, zin], attrs, NodeState())[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("geometry", [(3, 2, 0, 1), (3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 1, 2)], ids=str)
def test_max_pool_channels_last_matches_nchw(geometry: tuple, ceil_mode: int) -> None:
    k, s, p, d = geometry
    x = np.random.default_rng(1).standard_normal((2, 5, 13, 12), dtype=np.float32)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4, "dilations": [d, d], "ceil_mode": ceil_mode}
    expected = OPS["MaxPool"].fn([x], attrs)[0]
    got = max_pool([channels_last(x)], attrs, NodeState())[0]
    assert is_channels_last(got)
    np.testing.assert_array_equal(got, expected)


def test_concat_keeps_channels_last() -> None:
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, c, 4, 5), dtype=np.float32) for c in (3, 5)]
    got = concat([channels_last(x) for x in xs], {"axis": 1}, NodeState())[0]
    assert is_channels_last(got)
    np.testing.assert_array_equal(got, np.concatenate(xs, axis=1))


@pytest.mark.parametrize(
    "geometry",
    [(16, 20, 20, 3, [1, 1, 1, 1], 2), (8, 11, 13, 3, [1, 1, 1, 1], 2), (8, 12, 12, 3, [0, 0, 1, 1], 2),
     (6, 9, 9, 5, [2, 2, 2, 2], 2), (4, 10, 7, 3, [0, 0, 0, 0], 2), (5, 9, 8, 2, [0, 0, 0, 0], 2),
     (3, 8, 9, 1, [0, 0, 0, 0], 2), (7, 9, 10, 4, [1, 2, 2, 1], 2), (8, 12, 12, 3, [1, 1, 1, 1], 1)],
    ids=str,
)  # fmt: skip
def test_stride_2_depthwise_by_column_phases_matches_nchw(geometry: tuple) -> None:
    """Column stride 2 (row stride 2 or 1): the padded input split into even and odd columns."""
    c, h, w, k, pads, row_stride = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((c, 1, k, k), dtype=np.float32)
    bias = rng.standard_normal(c, dtype=np.float32)
    attrs = {"group": c, "strides": [row_stride, 2], "pads": pads, "kernel_shape": [k, k], "dilations": [1, 1]}
    expected = OPS["Conv"].fn([x, weight, bias], attrs)[0]
    for xin in (x, channels_last(x)):
        got = conv([xin, weight, bias], attrs, NodeState(cache={}))[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
