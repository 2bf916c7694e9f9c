"""Bad inputs at run and compile time (issue 18): each gets an EdgeInferError saying what was expected."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeinfer import EdgeInferError, Session
from edgeinfer.errors import CompileError, ImageError, InputError
from edgeinfer.ir import Graph, Node, TensorInfo
from edgeinfer.pack import write_pack
from edgeinfer.pipelines.config import bind_to_model, validate_pipeline
from edgeinfer.pipelines.preprocess import load_image


@pytest.fixture(scope="module")
def image_pack(tmp_path_factory):
    """x [1, 3, 8, 8] -> GlobalAveragePool -> Flatten -> y [1, 3], with a classification pipeline."""
    tensors = {
        "x": TensorInfo("x", (1, 3, 8, 8), "float32"),
        "g": TensorInfo("g", (1, 3, 1, 1), "float32"),
        "y": TensorInfo("y", (1, 3), "float32"),
    }
    nodes = [Node("gap", "GlobalAveragePool", ["x"], ["g"]), Node("flat", "Flatten", ["g"], ["y"], {"axis": 1})]
    pipeline = validate_pipeline({"task": "classification", "resize": "plain", "mean": [0, 0, 0], "std": [1, 1, 1]})
    metadata = {"pipeline": bind_to_model(pipeline, {"x": (1, 3, 8, 8)}), "labels": ["red", "green", "blue"]}
    path = tmp_path_factory.mktemp("img") / "tiny.pack"
    write_pack(Graph(nodes, ["x"], ["y"], tensors, metadata=metadata), path)
    return Session(path, device="cpu")


def test_16_bit_grayscale_png_is_scaled_not_white(tmp_path, image_pack):
    values = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535 in steps of 257
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], values // 257)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    image_pack.run(tmp_path / "g16.png")


def test_float_image_is_refused(tmp_path):
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ImageError, match="floating-point image"):
        load_image(tmp_path / "f.tiff")


@pytest.mark.parametrize(
    "data, error, message",
    [
        (np.zeros((0, 0, 3), np.uint8), ImageError, r"empty \(shape \[0, 0, 3\]\)"),
        (np.zeros((4, 0, 3), np.uint8), ImageError, "empty"),
        (np.zeros((1, 3, 8, 8)), InputError, "tensor of the right shape.*dtype float64; expected float32"),
        (np.zeros((1, 3, 9, 9), np.float32), InputError, r"expected the tensor x \[1x3x8x8\] float32"),
        (np.zeros((8, 8, 3), np.float32), ImageError, "HxWx3 uint8"),
        (np.zeros((8, 8), np.uint8), InputError, "or an HxWx3 uint8 RGB image"),
        ("/no/such/image.png", ImageError, "no such file"),
        (12, ImageError, "got int"),
    ],
)
def test_bad_run_input(image_pack, data, error, message):
    with pytest.raises(error, match=message) as caught:
        image_pack.run(data)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, EdgeInferError)


def test_non_image_file_and_directory(image_pack, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(ImageError, match="not an image PIL can decode"):
        image_pack.run(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        image_pack.run(tmp_path)


def test_wrong_feeds_are_input_errors(image_pack):
    with pytest.raises(InputError, match="unknown input 'z'"):
        image_pack.run({"z": np.zeros((1, 3, 8, 8), np.float32)})


# --- compile ------------------------------------------------------------------------------------


@pytest.fixture
def onnx_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("shape", ["x=1x3x-5x32", "x=1x3x0x32"])
def test_cli_non_positive_input_shape(onnx_model, tmp_path, capsys, shape):
    from edgeinfer.cli import main

    assert main(["compile", str(onnx_model), "-o", str(tmp_path / "m.pack"), "--input-shape", shape]) == 2
    assert "with positive integer dims" in capsys.readouterr().err
    assert not (tmp_path / "m.pack").exists()


def test_compile_model_negative_input_shape(onnx_model):
    """compile_model takes 0 (an empty tensor, as ONNX allows: conformance cases have them) but not -1."""
    from edgeinfer.compiler import compile_model

    with pytest.raises(CompileError, match=r"integers >= 0.*\[1, 3, -1, 4\]"):
        compile_model(onnx_model, {"x": (1, 3, -1, 4)})


def test_cli_output_is_a_directory(onnx_model, tmp_path, capsys):
    from edgeinfer.cli import main

    assert main(["compile", str(onnx_model), "-o", str(tmp_path), "--input-shape", "x=1x3x4x4"]) == 2
    assert "is a directory; expected a file name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.onnx"]  # no temporary file left behind


def test_empty_model_file_and_directory_as_model(tmp_path):
    pytest.importorskip("onnx")
    from edgeinfer.compiler import compile_model

    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(CompileError, match="is empty; expected a serialized ONNX model"):
        compile_model(tmp_path / "empty.onnx")
    with pytest.raises(CompileError, match="is a directory; expected an .onnx file"):
        compile_model(tmp_path)
