"""Detection end to end: presets + appended decoder/NMS + NumPy (or other) backend vs the manifest.

Each detector is compiled once per module (with a pack round trip) and run on every shared image the
manifest lists; a detection matches a reference one with the same label, IoU >= 0.9 and a score within
0.01, and the counts must be equal. Decoders without a shared model are checked on small synthetic
models against onnxruntime running the same appended graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import IMAGES, manifest, shared_model
from edgeinfer.backends import get_backend
from edgeinfer.errors import DeviceError
from edgeinfer.pipelines.config import bind_to_model, default_labels, resolve_pipeline
from edgeinfer.pipelines.postprocess import finish
from edgeinfer.pipelines.preprocess import prepare_input
from edgeinfer.pipelines.results import DET_BOXES, DET_CLASSES, DET_SCORES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from edgeinfer.pipelines.decode_graph import append_postprocessing  # noqa: E402

BACKENDS = ["cpu", "opencl", "cuda"]
DETECTORS = {"yolox": "yolox_nano_416.onnx", "fastestdet": "fastestdet_352.onnx", "ultraface": "ultraface_rfb_320.onnx"}


def compile_to_graph(model, pipeline, tmp_path):
    """compile_model (+ pack round trip): the graph a Session would load."""
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import read_pack, write_pack

    graph = compile_model(model, pipeline=pipeline)
    write_pack(graph, tmp_path / "model.pack")
    return read_pack(tmp_path / "model.pack")


def prepare(graph, backend: str):
    try:
        return get_backend(backend).prepare(graph)
    except DeviceError as e:
        pytest.skip(f"backend {backend} unavailable: {e}")


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def detector(request, tmp_path_factory):
    preset = request.param
    path = shared_model(DETECTORS[preset])
    pipeline = resolve_pipeline(preset)
    graph = compile_to_graph(str(path), pipeline, tmp_path_factory.mktemp(preset))
    shapes = {n: graph.tensors[n].shape for n in graph.inputs}
    pipeline = bind_to_model(graph.metadata.get("pipeline") or pipeline, shapes)
    reference = next(e for e in manifest() if e["file"] == path.name)["reference_detections_onnxruntime"]
    return preset, graph, pipeline, default_labels(pipeline, path), reference


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def match(detections, reference) -> int:
    """How many reference detections find their own match (same label, IoU >= 0.9, |dscore| <= 0.01)."""
    free = list(detections)
    found = 0
    for ref in reference:
        for d in free:
            if d.label == ref["label"] and iou(d.box, ref["box"]) >= 0.9 and abs(d.score - ref["score"]) <= 0.01:
                free.remove(d)
                found += 1
                break
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_detections_match_manifest(detector, backend):
    preset, graph, pipeline, labels, reference = detector
    exe = prepare(graph, backend)
    images = {name: IMAGES / name for name in reference if (IMAGES / name).exists()}
    if not images:
        pytest.skip(f"none of the {preset} reference images are in {IMAGES}")
    failures = []
    for name, path in images.items():
        tensor, context = prepare_input(path, pipeline)
        dets = finish(exe.run({pipeline["input"]: tensor}), pipeline, labels, context)
        found = match(dets, reference[name])
        if found != len(reference[name]) or len(dets) != len(reference[name]):
            failures.append(f"{name}: matched {found}/{len(reference[name])}, got {dets!r}, expected {reference[name]}")
    assert not failures, f"{preset} on {backend}:\n" + "\n".join(failures)


def ort_run(model, feeds: dict) -> dict:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_with_onnx_nms_matches_onnxruntime(backend, tmp_path):
    """A detector whose ONNX graph already ends in decode + NonMaxSuppression + Gather compiles and runs."""
    path = shared_model(DETECTORS["yolox"])
    image = IMAGES / "dog.jpg"
    if not image.exists():
        pytest.skip(f"{image} not found")
    pipeline = resolve_pipeline("yolox")
    model = append_postprocessing(onnx.load(str(path)), pipeline)
    assert {"NonMaxSuppression", "Gather", "ArgMax", "ReduceMax"} <= {n.op_type for n in model.graph.node}
    tensor, _ = prepare_input(image, bind_to_model(pipeline, {"images": [1, 3, 416, 416]}))
    expected = ort_run(model, {"images": tensor})
    got = prepare(compile_to_graph(model, None, tmp_path), backend).run({"images": tensor})
    assert len(expected[DET_SCORES]) == 3
    np.testing.assert_array_equal(got[DET_CLASSES], expected[DET_CLASSES])
    np.testing.assert_allclose(got[DET_SCORES], expected[DET_SCORES], atol=1e-4)
    np.testing.assert_allclose(got[DET_BOXES], expected[DET_BOXES], atol=1e-2)


# --- decoders checked on synthetic heads (onnxruntime runs the appended graph) ---------------------------


def head_model(heads: dict[str, tuple[int, ...]], size=(64, 64)):
    """A model with an unused image input and each head as an input passed straight to an output."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *size])]
    outputs, nodes = [], []
    for name, shape in heads.items():
        inputs.append(helper.make_tensor_value_info(f"{name}_in", TensorProto.FLOAT, list(shape)))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        nodes.append(helper.make_node("Identity", [f"{name}_in"], [name]))
    graph = helper.make_graph(nodes, "heads", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def run_heads(pipeline: dict, heads: dict[str, np.ndarray], size=(64, 64)) -> dict:
    model = append_postprocessing(head_model({k: v.shape for k, v in heads.items()}, size), pipeline)
    feeds = {f"{k}_in": v.astype(np.float32) for k, v in heads.items()}
    return ort_run(model, {"image": np.zeros((1, 3, *size), np.float32), **feeds})


def nms_reference(boxes, scores, iou_threshold, score_threshold):
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] > score_threshold and all(iou(boxes[i], boxes[j]) <= iou_threshold for j in keep):
            keep.append(i)
    return np.array(keep, np.int64)


def test_yolo_anchors_decoder_matches_numpy_formula():
    rng = np.random.default_rng(0)
    anchors = [[10, 13, 16, 30], [30, 61, 62, 45]]
    heads = {"p3": rng.normal(0, 2, (1, 2 * 7, 8, 8)), "p4": rng.normal(0, 2, (1, 2 * 7, 4, 4))}
    overrides = {"task": "detection", "input": "image", "score_threshold": 0.4, "nms_iou": 0.5, "max_detections": 500}
    decoder = {"type": "yolo-anchors", "strides": [8, 16], "anchors": anchors, "outputs": ["p3", "p4"]}
    got = run_heads(resolve_pipeline(None, None, {**overrides, "decoder": decoder}), heads)

    rows = []
    for head, stride, anc in zip(heads.values(), [8, 16], anchors):
        s = 1 / (1 + np.exp(-head.reshape(2, 7, *head.shape[2:]).transpose(0, 2, 3, 1)))  # [A, H, W, 7]
        gy, gx = np.meshgrid(np.arange(head.shape[2]), np.arange(head.shape[3]), indexing="ij")
        xy = (s[..., :2] * 2 - 0.5 + np.stack([gx, gy], -1)) * stride
        wh = (s[..., 2:4] * 2) ** 2 * np.asarray(anc, float).reshape(2, 1, 1, 2)
        rows.append(np.concatenate([xy - wh / 2, xy + wh / 2, s[..., 4:5] * s[..., 5:]], -1).reshape(-1, 6))
    rows = np.concatenate(rows)
    scores = rows[:, 4:].max(1)
    keep = nms_reference(rows[:, :4], scores, 0.5, 0.4)
    assert len(keep) > 3
    np.testing.assert_allclose(got[DET_BOXES], rows[keep, :4], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[DET_SCORES], scores[keep], rtol=1e-5)
    np.testing.assert_array_equal(got[DET_CLASSES], rows[keep, 4:].argmax(1))


def test_ssd_decoder_with_priors_and_background_class():
    from edgeinfer.pipelines.decode_graph import ssd_priors

    spec = {"strides": [16, 32], "min_sizes": [[16, 24], [32]]}
    priors = ssd_priors(spec, (64, 64))
    n = len(priors)
    assert n == 4 * 4 * 2 + 2 * 2
    truth = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]], np.float32)  # normalised x1y1x2y2
    loc = np.zeros((1, n, 4), np.float32)
    scores = np.full((1, n, 3), [0.98, 0.01, 0.01], np.float32)
    for box, prior_index, cls in zip(truth, [3, 33], [2, 1]):
        p = priors[prior_index]
        cxcy, wh = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
        loc[0, prior_index] = [*((cxcy - p[:2]) / p[2:] / 0.1), *(np.log(wh / p[2:]) / 0.2)]
        scores[0, prior_index] = 0.0
        scores[0, prior_index, cls] = 0.9
    decoder = {"type": "ssd", "scores_output": "scores", "boxes_output": "loc", "priors": spec}
    pipeline = resolve_pipeline(None, None, {"task": "detection", "input": "image", "decoder": decoder})
    got = run_heads(pipeline, {"scores": scores, "loc": loc})
    np.testing.assert_allclose(got[DET_BOXES], truth * 64, atol=1e-3)
    np.testing.assert_array_equal(got[DET_CLASSES], [2, 1])


def test_class_aware_nms_and_strict_score_threshold():
    # Two near-identical boxes of different classes and one box scoring exactly the threshold.
    heads = {"boxes": np.array([[[4, 4, 30, 30], [5, 5, 31, 31], [40, 40, 60, 60]]], np.float32)}
    heads["scores"] = np.array([[[0.0, 0.9, 0.1], [0.0, 0.1, 0.8], [0.0, 0.5, 0.0]]], np.float32)
    decoder = {"type": "ssd", "scores_output": "scores", "boxes_output": "boxes", "normalized": False}
    base = {"task": "detection", "input": "image", "decoder": decoder, "score_threshold": 0.5}
    agnostic = run_heads(resolve_pipeline(None, None, base), heads)
    aware = run_heads(resolve_pipeline(None, None, {**base, "class_aware": True}), heads)
    np.testing.assert_array_equal(agnostic[DET_CLASSES], [1])  # the 0.5 box is not "> 0.5"
    np.testing.assert_array_equal(aware[DET_CLASSES], [1, 2])
    np.testing.assert_allclose(aware[DET_BOXES], heads["boxes"][0, :2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_session_run_image_gives_manifest_detections(detector, backend, tmp_path):
    """The user path: Session(pack).run(path) pre-processes (on the device for OpenCL), runs and decodes."""
    import edgeinfer
    from edgeinfer.pack import write_pack

    preset, graph, pipeline, labels, reference = detector
    name = next((n for n in reference if (IMAGES / n).exists()), None)
    if name is None:
        pytest.skip(f"none of the {preset} reference images are in {IMAGES}")
    graph.metadata["labels"] = labels
    write_pack(graph, tmp_path / "model.pack")
    try:
        sess = edgeinfer.Session(tmp_path / "model.pack", device=backend)
    except DeviceError as e:
        pytest.skip(f"backend {backend} unavailable: {e}")
    dets = sess.run(str(IMAGES / name))
    assert len(dets) == len(reference[name]) and match(dets, reference[name]) == len(reference[name]), dets
    assert all(isinstance(d.label, str) and len(d.box) == 4 for d in dets)
    assert dets.boxes.shape == (len(dets), 4)
