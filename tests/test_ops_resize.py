"""Resize's coordinate transformation where an axis is resized to length 1: ONNX says pytorch_half_pixel maps it to
source coordinate 0 (the NumPy op used -0.5, which only cubic shows: linear and nearest clamp both to pixel 0). The
NumPy op against onnxruntime, and the device planners' coordinate table against the NumPy op's."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from edgeinfer.ops import get_op  # noqa: E402
from edgeinfer.ops.tensor import _source_coords  # noqa: E402
from edgeinfer.planning.tensor import source_coordinates  # noqa: E402


def _onnxruntime_resize(x: np.ndarray, sizes: list[int], attrs: dict) -> np.ndarray:
    node = helper.make_node("Resize", ["X", "", "", "sizes"], ["Y"], **attrs)
    sizes_tensor = helper.make_tensor("sizes", TensorProto.INT64, [len(sizes)], sizes)
    x_info = helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)
    y_info = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "resize", [x_info], [y_info], [sizes_tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


@pytest.mark.parametrize("mode", ["cubic", "linear", "nearest"])
@pytest.mark.parametrize("sizes", [[1, 1, 3, 1], [1, 1, 1, 3], [1, 1, 1, 1]])
def test_pytorch_half_pixel_to_length_one_matches_onnxruntime(mode, sizes):
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 5)).astype(np.float32)
    attrs = {"coordinate_transformation_mode": "pytorch_half_pixel", "mode": mode}
    expected = _onnxruntime_resize(x, sizes, attrs)
    got = get_op("Resize").fn([x, None, None, np.array(sizes, np.int64)], attrs)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
@pytest.mark.parametrize("out_len, in_len", [(1, 4), (3, 4), (8, 4)])
def test_device_coordinate_table_agrees_with_the_numpy_op(mode, out_len, in_len):
    scale = out_len / in_len
    np.testing.assert_allclose(source_coordinates(out_len, in_len, scale, mode),
                               _source_coords(mode, out_len, in_len, scale, (0.0, 1.0)), atol=1e-6)  # fmt: skip
