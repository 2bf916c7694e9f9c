"""The native im2col (``kernels/cpu/im2col_isa.h``) that feeds group-1 convs' sgemm, against the pure NumPy gather.

The patches are copies, and the sgemm that follows gets the same operands in the same layout, so the native and the
NumPy paths must agree exactly; both are held to the NCHW reference within float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_native_kernels import channels_last, isa  # noqa: F401 (isa: the fixture running each ISA build)

from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.kernels import NodeState, conv
from edgeinfer.ops import OPS

# (C, M, H, W, kernel, strides, dilations, pads (top, left, bottom, right))
CONVS = [
    (16, 24, 11, 9, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),  # SqueezeNet's fire expands: whole kernel rows
    (12, 16, 13, 10, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),  # YOLOX's stride-2 convs
    (5, 7, 9, 8, (3, 2), (1, 2), (2, 1), (2, 0, 1, 1)),  # dilated, odd channels, a 3x2 window, asymmetric pads
    (4, 40, 3, 2, (3, 3), (1, 1), (1, 1), (2, 2, 2, 2)),  # an image smaller than the window
    (8, 8, 7, 7, (5, 5), (1, 1), (1, 1), (0, 0, 0, 0)),  # unpadded
    (3, 32, 15, 14, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),  # a stem: from NCHW, channel-major columns
    (3, 16, 12, 12, (3, 3), (2, 2), (1, 1), (0, 0, 1, 1)),  # TensorFlow's SAME stem
    (3, 8, 41, 70, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),  # rows long enough for the stems' vector shuffle
    (20, 8, 10, 9, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),  # from NCHW, not a stem: tap-major from planes
]


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict, native: bool) -> np.ndarray:
    state = NodeState(native=native, cache={})
    inputs = [x, w] if b is None else [x, w, b]
    conv(inputs, attrs, state)  # (the second run uses the cached geometry and packed weights)
    return conv(inputs, attrs, state)[0]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("nchw", [False, True], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("case", CONVS, ids=str)
def test_native_im2col_convs_match_numpy_exactly(case: tuple, nchw: bool, with_bias: bool, isa: str, monkeypatch):  # noqa: F811
    c, m, h, wd, kernel, strides, dilations, pads = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, c, h, wd), dtype=np.float32)
    w = rng.standard_normal((m, c, *kernel), dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32) if with_bias else None
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "dilations": list(dilations),
             "pads": list(pads), "activation": "relu"}  # fmt: skip
    x_in = x if nchw else channels_last(x)
    calls = []
    gather = native_kernels.im2col
    monkeypatch.setattr(native_kernels, "im2col", lambda *a, **k: calls.append(a[4]) or gather(*a, **k))
    got = _conv(x_in, w, b, attrs, native=True)
    assert calls, "the native im2col did not run"
    stem = nchw and c * kernel[0] * kernel[1] <= m
    assert all(channel_major == stem for channel_major in calls)
    np.testing.assert_array_equal(got, _conv(x_in, w, b, attrs, native=False))
    expected = OPS["Conv"].fn([x, w] if b is None else [x, w, b], attrs)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channel_major", [False, True])
def test_native_im2col_writes_every_column(channel_major: bool, isa: str) -> None:  # noqa: F811
    """Each column, padding and the ones included, against a gather written out in NumPy; a wider ``cols`` row
    (a column the kernel must not touch) keeps its value."""
    h, wd, c, kernel, strides, pads = 7, 6, 5, [3, 3], [2, 1], [1, 2, 1, 0]
    window = (kernel, strides, [1, 1], pads)
    x = np.random.default_rng(2).standard_normal((h, wd, c), dtype=np.float32)
    ho, wo = (h + 2 - 3) // 2 + 1, (wd + 2 - 3) // 1 + 1
    k = c * 9
    cols = np.full((ho, wo, k + 2), 7.0, np.float32)
    native_kernels.im2col(x, cols[1:, :, : k + 1], window, 1, channel_major, True)
    padded = np.zeros((h + 2, wd + 2, c), np.float32)
    padded[1 : 1 + h, 2 : 2 + wd] = x
    for i in range(1, ho):
        for j in range(wo):
            patch = padded[i * 2 : i * 2 + 3, j : j + 3]  # (kh, kw, C)
            want = patch.transpose(2, 0, 1).ravel() if channel_major else patch.ravel()
            np.testing.assert_array_equal(cols[i, j, :k], want)
    assert (cols[1:, :, k] == 1).all() and (cols[0] == 7).all() and (cols[:, :, k + 1] == 7).all()


@pytest.mark.skipif(not native_kernels.available(), reason="no native kernels")
def test_bad_im2col_buffers_raise() -> None:
    x = np.zeros((6, 6, 8), np.float32)
    window = ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="im2col kernel: the output buffer is shorter"):
        native_kernels.im2col(x, np.zeros((6, 6, 72), np.float32), window, 0, False, True)  # no room for the ones
    with pytest.raises(ValueError, match=r"im2col kernel: end output row .*\(got 8\)"):
        native_kernels.im2col(x, np.zeros((6, 6, 73), np.float32), window, 2, False, True)  # rows past the image
    flipped = x[::-1]
    assert not native_kernels.im2col_fits(flipped) and native_kernels.im2col_fits(x.transpose(1, 0, 2))


@pytest.mark.skipif(not native_kernels.available(), reason="no native kernels")
@pytest.mark.parametrize("dilations", [[-1000, 1], [1, -1], [0, 1]])
def test_a_forged_group_1_conv_raises_a_value_error(dilations: list[int]) -> None:
    x = channels_last(np.zeros((1, 16, 9, 9), np.float32))
    w, b = np.ones((8, 16, 3, 3), np.float32), np.zeros(8, np.float32)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "dilations": dilations}
    with pytest.raises(ValueError, match=rf"native im2col kernel: dilations\[{int(dilations[0] > 0)}\] must be >= 1"):
        conv([x, w, b], attrs, NodeState(native=True, cache={}))
