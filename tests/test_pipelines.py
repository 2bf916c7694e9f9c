"""Pipelines: presets and config files, labels, pre-processing against the reference, top-k, results."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, MODELS, manifest, shared_model
from edgeinfer.pipelines import Detection, Detections, draw_detections
from edgeinfer.pipelines.config import (
    PipelineError,
    bind_to_model,
    default_labels,
    load_labels,
    resolve_pipeline,
    validate_pipeline,
)
from edgeinfer.pipelines.postprocess import finish
from edgeinfer.pipelines.preprocess import prepare_input
from edgeinfer.pipelines.presets import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_is_json(name):
    p = resolve_pipeline(name)
    assert json.loads(json.dumps(p)) == p
    assert p["task"] in ("classification", "detection")


def test_file_tunes_a_preset_and_overrides_win(tmp_path):
    (tmp_path / "p.toml").write_text('preset = "yolox"\nscore_threshold = 0.5\n[decoder]\nscore = "cls"\n')
    p = resolve_pipeline(None, tmp_path / "p.toml", {"nms_iou": 0.6, "decoder.strides": [8, 16, 32]})
    assert (p["score_threshold"], p["nms_iou"], p["decoder"]["score"]) == (0.5, 0.6, "cls")
    assert p["resize"] == "letterbox-topleft"
    (tmp_path / "p.json").write_text(json.dumps({"task": "classification", "size": [32, 32], "mean": 0.5}))
    assert resolve_pipeline(None, tmp_path / "p.json")["mean"] == [0.5, 0.5, 0.5]


def test_yaml_file_when_pyyaml_is_there(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "p.yaml").write_text("preset: fastestdet\nscore_threshold: 0.5\n")
    assert resolve_pipeline(None, tmp_path / "p.yaml")["score_threshold"] == 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resize": "stretch"}, r"'resize' is 'stretch'; expected one of \['plain'"),
        ({"colour_order": "BGR"}, r"unknown pipeline key\(s\) \['colour_order'\]"),
        ({"std": [1, 0, 1]}, "'std' must be non-zero"),
        ({"decoder.type": "yolo9"}, r"'decoder.type' is 'yolo9'"),
        ({"decoder.stride": [8]}, r"unknown key\(s\) \['stride'\] for decoder 'yolox'"),
        ({"nms_iou": 1.5}, r"'nms_iou' must lie in \[0.0, 1.0\]"),
    ],
)
def test_bad_pipelines_name_the_key(overrides, message):
    with pytest.raises(PipelineError, match=message):
        resolve_pipeline("yolox", None, overrides)


def test_preset_and_file_must_agree(tmp_path):
    (tmp_path / "p.json").write_text('{"preset": "yolox"}')
    with pytest.raises(PipelineError, match="tunes preset 'yolox'"):
        resolve_pipeline("fastestdet", tmp_path / "p.json")


def test_bind_takes_the_size_from_the_model():
    p = bind_to_model(resolve_pipeline("mobilenet"), {"input": [1, 3, 128, 128]})
    assert (p["input"], p["size"]) == ("input", [128, 128])
    p = bind_to_model(resolve_pipeline("mobilenet_qdq"), {"input": [1, 224, 224, 3]})
    assert p["size"] == [224, 224]
    with pytest.raises(PipelineError, match="has 224 channels"):
        bind_to_model(resolve_pipeline("mobilenet"), {"input": [1, 224, 224, 3]})
    with pytest.raises(PipelineError, match="not a model input"):
        bind_to_model({**resolve_pipeline("mobilenet"), "input": "data"}, {"input": [1, 3, 224, 224]})


def test_load_labels_both_formats(tmp_path):
    (tmp_path / "a.txt").write_text("0,tench, Tinca tinca\n1,goldfish\n\n")
    (tmp_path / "b.names").write_text("person\nbicycle\n")
    assert load_labels(tmp_path / "a.txt") == ["tench, Tinca tinca", "goldfish"]
    assert load_labels(tmp_path / "b.names") == ["person", "bicycle"]
    assert default_labels(resolve_pipeline("ultraface")) == ["background", "face"]
    if (MODELS / "imagenet1000_winml.txt").exists():
        assert len(default_labels(resolve_pipeline("squeezenet"), MODELS / "squeezenet1.1.onnx")) == 1000


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_kinds_give_the_same_tensor(tmp_path):
    p = bind_to_model(resolve_pipeline("squeezenet"), {"data_0": [1, 3, 224, 224]})
    img = rgb(300, 451)
    Image.fromarray(img).save(tmp_path / "x.png")
    a, _ = prepare_input(img, p)
    b, _ = prepare_input(Image.fromarray(img), p)
    c, _ = prepare_input(tmp_path / "x.png", p)
    assert a.shape == (1, 3, 224, 224) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        prepare_input(img.astype(np.float32), p)


@pytest.mark.parametrize(
    ("resize", "hw", "scale", "offset"),
    [
        ("letterbox-topleft", (200, 400), (0.5, 0.5), (0.0, 0.0)),
        ("letterbox-centre", (200, 400), (0.5, 0.5), (0.0, 50.0)),
        ("plain", (100, 400), (0.5, 2.0), (0.0, 0.0)),
        ("square-crop", (200, 400), (1.0, 1.0), (-100.0, 0.0)),
    ],
)
def test_context_maps_original_to_network_pixels(resize, hw, scale, offset):
    p = validate_pipeline({"task": "classification", "size": [200, 200], "resize": resize})
    x, ctx = prepare_input(rgb(*hw), p)
    assert x.shape == (1, 3, 200, 200)
    assert (tuple(ctx["scale_xy"]), tuple(ctx["offset_xy"]), ctx["orig_hw"]) == (scale, offset, list(hw))


def test_letterbox_pads_and_uint8_nhwc():
    p = validate_pipeline({"task": "classification", "size": [64, 64], "resize": "letterbox-topleft", "pad_value": 114})
    x, _ = prepare_input(np.zeros((32, 64, 3), np.uint8), p)
    assert (x[0, :, 40:, :] == 114).all() and (x[0, :, :30, :] == 0).all()
    p = validate_pipeline({"task": "classification", "size": [8, 8], "layout": "NHWC", "dtype": "uint8"})
    x, _ = prepare_input(rgb(8, 8), p)
    assert x.shape == (1, 8, 8, 3) and x.dtype == np.uint8


CLASSIFIERS = {
    "squeezenet1.1.onnx": "squeezenet",
    "mobilenet_v2_1.0_224.onnx": "mobilenet",
    "mobilenet_v1_0.25_128.onnx": "mobilenet",
    "mobilenet_v2_1.0_224_qdq_uint8.onnx": "mobilenet_qdq",
}


@pytest.mark.parametrize("file", sorted(CLASSIFIERS))
def test_preprocessing_reproduces_reference_top3(file):
    """Our pre-processing fed to onnxruntime gives the manifest's top-3 (the reference runtime isolates it)."""
    ort = pytest.importorskip("onnxruntime")
    path = shared_model(file)
    entry = next(e for e in manifest() if e["file"] == file)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    p = bind_to_model(resolve_pipeline(CLASSIFIERS[file], None, {"top_k": 3}), shapes)
    labels = load_labels(MODELS / entry["labels"])
    checked = 0
    for image, expected in entry["reference_top3_onnxruntime"].items():
        if not (IMAGES / image).exists():
            continue
        x, ctx = prepare_input(IMAGES / image, p)
        raw = sess.run(None, {p["input"]: x})[0].reshape(-1)
        top = finish({"out": raw}, p, labels, ctx)
        for (label, score), (ref_label, _) in zip(top, expected):
            # Among equal uint8 scores the reference's order is arbitrary: a tie is a match.
            assert label == ref_label or raw[labels.index(ref_label)] == score, (image, top, expected)
        np.testing.assert_allclose([t[1] for t in top], [e[1] for e in expected], atol=0.01, err_msg=image)
        checked += 1
    assert checked, f"no reference image of {file} in {IMAGES}"


def test_top_k_softmax_dequantise_and_ties():
    p = validate_pipeline({"task": "classification", "top_k": 2, "softmax": True})
    top = finish({"y": np.array([[1.0, 3.0, 2.0]], np.float32)}, p, ["a", "b", "c"], {})
    assert [t[0] for t in top] == ["b", "c"] and abs(sum(np.exp([1, 3, 2]) / np.exp([1, 3, 2]).sum()) - 1) < 1e-9
    p = validate_pipeline({"task": "classification", "top_k": 3, "output_scale": 0.5})
    top = finish({"y": np.array([[4, 9, 4, 0]], np.uint8)}, p, ["a", "b", "c", "d"], {})
    assert top == [("b", 4.5), ("a", 2.0), ("c", 2.0)]  # equal scores: lower index first


def test_detections_sequence_and_arrays(tmp_path):
    boxes = np.array([[10, 20, 110, 220], [-24, 5, 50, 60]], np.float32)
    dets = Detections(boxes, [0.9, 0.4], [1, 0], ["person", "bicycle"])
    assert len(dets) == 2 and dets.labels == ["bicycle", "person"]
    assert dets[0] == Detection("bicycle", 1, pytest.approx(0.9), (10.0, 20.0, 110.0, 220.0))
    assert [d.label for d in dets[1:]] == ["person"]
    assert dets.boxes.shape == (2, 4) and dets.class_ids.dtype == np.int64
    assert "bicycle 0.900" in repr(dets)
    out = draw_detections(rgb(240, 320), dets, tmp_path / "a.jpg")
    assert out.size == (320, 240) and (tmp_path / "a.jpg").stat().st_size > 0


def test_detection_boxes_map_back_unclipped():
    p = resolve_pipeline("yolox")
    outputs = {
        "det_boxes": np.array([[-10, 8, 208, 104]], np.float32),
        "det_scores": np.array([0.8], np.float32),
        "det_classes": np.array([16], np.int64),
    }
    context = {"scale_xy": [0.5, 0.5], "offset_xy": [0.0, 0.0]}
    dets = finish(outputs, p, [], context)
    assert dets[0].box == (-20.0, 16.0, 416.0, 208.0) and dets[0].label == "16"
    with pytest.raises(ValueError, match="lacks the decoded outputs"):
        finish({"output": np.zeros((1, 3549, 85), np.float32)}, p, [], context)


def test_runtime_modules_do_not_import_onnx():
    code = (
        "import sys, edgeinfer.pipelines, edgeinfer.pipelines.postprocess, edgeinfer.pipelines.presets;"
        "assert not [m for m in sys.modules if m == 'onnx' or m.startswith(('onnx.', 'onnxruntime'))]"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
