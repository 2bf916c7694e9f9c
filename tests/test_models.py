"""Every real model in $EDGEINFER_SHARED/models compiles and matches onnxruntime on the NumPy backend.

Each model runs on a seeded random input and on one real photo prepared as models/README.md
describes. fp32 outputs must be within 1e-4 relative L2 error.

Quantized (QDQ) models are compared with onnxruntime at ORT_ENABLE_BASIC, which runs the QDQ ops as
the ONNX spec defines them (dequantize, compute in float, quantize), as edgeinfer does. Their uint8
outputs cannot be held to +-1: a value sitting on a rounding boundary in an early layer flips with
the fp32 summation order and the flip propagates. onnxruntime's own two executions of
mobilenet_v2 QDQ (ORT_ENABLE_BASIC vs ORT_ENABLE_ALL, which uses integer QLinearConv kernels) differ
by 4 steps on 3 of 1001 outputs for chelsea.png. So: the same top-1 class, at most
UINT8_MAX_STEPS steps apart, on at most UINT8_MAX_MISMATCH_FRACTION of the elements; the table
reports how many elements differ.
Run with ``-s`` to see the per-model error table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

from test_compiler import assert_plan_valid  # noqa: E402

from conftest import IMAGES, MODELS, manifest  # noqa: E402
from edgeinfer.backends import numpy as numpy_backend  # noqa: E402
from edgeinfer.compiler import compile_model  # noqa: E402
from edgeinfer.ir import Graph  # noqa: E402

REL_L2_TOL = 1e-4
UINT8_MAX_STEPS = 4  # what onnxruntime's two QDQ execution paths differ by (see above)
UINT8_MAX_MISMATCH_FRACTION = 0.01


def _load_rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def _center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Short side to size*256/224, then the centred size x size crop (MobileNet evaluation crop)."""
    w, h = img.size
    short = round(size * 256 / 224)
    scale = short / min(w, h)
    img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def prep_squeezenet(img: Image.Image) -> np.ndarray:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    a = np.asarray(img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR))
    return _nchw(a[..., ::-1].astype(np.float32))


def prep_mobilenet(size: int) -> Callable[[Image.Image], np.ndarray]:
    return lambda img: _nchw((_center_crop(img, size).astype(np.float32) - 127.5) / 127.5)


def prep_mobilenet_uint8(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(_center_crop(img, 224)[None])


def prep_yolox(img: Image.Image) -> np.ndarray:
    w, h = img.size
    r = min(416 / w, 416 / h)
    canvas = np.full((416, 416, 3), 114, np.uint8)
    resized = np.asarray(img.resize((int(w * r), int(h * r)), Image.BILINEAR))
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return _nchw(canvas[..., ::-1].astype(np.float32))


def prep_fastestdet(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.resize((352, 352), Image.BILINEAR))
    return _nchw(a[..., ::-1].astype(np.float32) / 255)


def prep_ultraface(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.resize((320, 240), Image.BILINEAR)).astype(np.float32)
    return _nchw((a - 127) / 128)


# model file -> (photo, preprocessing) per models/README.md
PIPELINES: dict[str, tuple[str, Callable[[Image.Image], np.ndarray]]] = {
    "squeezenet1.1.onnx": ("chelsea.png", prep_squeezenet),
    "mobilenet_v2_1.0_224.onnx": ("chelsea.png", prep_mobilenet(224)),
    "mobilenet_v1_0.25_128.onnx": ("chelsea.png", prep_mobilenet(128)),
    "mobilenet_v2_1.0_224_qdq_uint8.onnx": ("chelsea.png", prep_mobilenet_uint8),
    "yolox_nano_416.onnx": ("dog.jpg", prep_yolox),
    "fastestdet_352.onnx": ("dog.jpg", prep_fastestdet),
    "ultraface_rfb_320.onnx": ("face.jpg", prep_ultraface),
}

MODEL_FILES = sorted(p.name for p in MODELS.glob("*.onnx")) if MODELS.is_dir() else []
ROWS: list[tuple[str, str, str, str, str]] = []  # model, input, output, max abs, error


@pytest.fixture(scope="module", autouse=True)
def error_table():
    """Print the per-model error table once all models ran (visible with -s)."""
    yield
    if ROWS:
        header = ("model", "input", "output", "max abs", "rel L2 / uint8 diffs")
        widths = [max(len(r[i]) for r in [header, *ROWS]) for i in range(5)]
        print()
        for row in [header, *ROWS]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


@pytest.fixture(scope="module")
def compiled() -> dict[str, tuple[Graph, ort.InferenceSession]]:
    """Each model compiled once, with its onnxruntime session (reference)."""
    return {}


def _get(compiled: dict, file: str) -> tuple[Graph, ort.InferenceSession]:
    if file not in compiled:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 2
        path = MODELS / file
        graph = compile_model(path)
        if any(n.op == "QuantizeLinear" for n in graph.nodes):
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        compiled[file] = (graph, ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]))
    return compiled[file]


def _random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        info = graph.tensors[name]
        if np.issubdtype(np.dtype(info.dtype), np.integer):
            feeds[name] = rng.integers(0, 256, info.shape).astype(info.dtype)
        else:
            feeds[name] = rng.uniform(-1, 1, info.shape).astype(info.dtype)
    return feeds


def _compare(
    file: str, kind: str, graph: Graph, sess: ort.InferenceSession, feeds: dict[str, np.ndarray], native: bool = True
) -> None:
    ours = numpy_backend.NumpyExecutable(graph, native=native).run(feeds)
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert set(ours) == set(ref), "graph outputs must keep their ONNX names"
    failures = []
    for name, r in ref.items():
        o = ours[name]
        assert o.shape == r.shape and o.dtype == r.dtype, f"{name}: {o.shape} {o.dtype} vs {r.shape} {r.dtype}"
        diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
        if np.issubdtype(r.dtype, np.integer):
            off, off1 = int((diff > 0).sum()), int((diff > 1).sum())
            ROWS.append((file, kind, name, f"{diff.max():.0f}", f"{off}/{r.size} differ, {off1} by more than 1"))
            if diff.max() > UINT8_MAX_STEPS or off > UINT8_MAX_MISMATCH_FRACTION * r.size:
                failures.append(f"{name}: max diff {diff.max()}, {off} elements differ")
            if r.ndim == 2 and (o.argmax(axis=-1) != r.argmax(axis=-1)).any():
                failures.append(f"{name}: top-1 class differs")
        else:
            rel = float(np.linalg.norm(o.astype(np.float64) - r) / max(np.linalg.norm(r), 1e-30))
            ROWS.append((file, kind, name, f"{diff.max():.2e}", f"{rel:.2e}"))
            if not rel <= REL_L2_TOL:
                failures.append(f"{name}: relative L2 error {rel:.2e} > {REL_L2_TOL}")
    assert not failures, failures


def _require_models() -> None:
    if not MODEL_FILES:
        pytest.skip(f"no models in {MODELS} (set EDGEINFER_SHARED to the folder holding models/)")


@pytest.mark.parametrize("native", [True, False], ids=["native", "pure-numpy"])
@pytest.mark.parametrize("file", MODEL_FILES or ["(none)"])
def test_model_matches_onnxruntime_on_random_input(file, compiled, native):
    """With the native kernels (the default where they are built) and without (the pure NumPy fallback)."""
    _require_models()
    graph, sess = _get(compiled, file)
    _compare(file, "random" if native else "random, pure NumPy", graph, sess, _random_feeds(graph), native)


@pytest.mark.parametrize("file", MODEL_FILES or ["(none)"])
def test_model_matches_onnxruntime_on_real_image(file, compiled):
    _require_models()
    if file not in PIPELINES:
        pytest.skip(f"no preprocessing recipe for {file} in this test")
    image, prep = PIPELINES[file]
    if not (IMAGES / image).exists():
        pytest.skip(f"image {IMAGES / image} not found (set EDGEINFER_SHARED)")
    graph, sess = _get(compiled, file)
    x = prep(_load_rgb(IMAGES / image))
    assert x.shape == graph.tensors[graph.inputs[0]].shape
    _compare(file, image, graph, sess, {graph.inputs[0]: x.astype(graph.tensors[graph.inputs[0]].dtype)})


@pytest.mark.parametrize("file", MODEL_FILES or ["(none)"])
def test_model_graph_is_canonical_and_planned(file, compiled):
    _require_models()
    graph, _ = _get(compiled, file)
    assert not {"BatchNormalization", "Dropout", "Upsample", "Constant"} & {n.op for n in graph.nodes}
    for node in graph.nodes:
        assert "auto_pad" not in node.attrs
    assert all(not t.dynamic and all(d >= 0 for d in t.shape) for t in graph.tensors.values())
    plan = graph.memory_plan
    assert 0 < plan.arena_bytes < plan.naive_bytes
    assert_plan_valid(graph)
    assert graph.metadata["flops"] > 0 and len(graph.metadata["node_flops"]) == len(graph.nodes)


def _label(line: str) -> str:
    """Label files hold ``name`` or ``idx,name`` per line."""
    head, sep, tail = line.strip().partition(",")
    return tail if sep and head.isdigit() else line.strip()


@pytest.mark.parametrize("file", ["squeezenet1.1.onnx", "mobilenet_v2_1.0_224.onnx", "mobilenet_v1_0.25_128.onnx"])
def test_classifier_top3_matches_manifest_reference(file, compiled):
    """End to end on a real photo: the top-3 labels and probabilities onnxruntime recorded."""
    entry = next((e for e in manifest() if e["file"] == file), None)
    image, prep = PIPELINES[file]
    if entry is None or not (MODELS / file).exists() or not (IMAGES / image).exists():
        pytest.skip(f"{file} or {image} not found under {MODELS.parent}")
    graph, _ = _get(compiled, file)
    (probs,) = numpy_backend.prepare(graph).run({graph.inputs[0]: prep(_load_rgb(IMAGES / image))}).values()
    labels = [_label(line) for line in (MODELS / entry["labels"]).read_text().splitlines()]
    probs = probs.ravel()
    top3 = [(labels[i], float(probs[i])) for i in np.argsort(-probs)[:3]]
    expected = entry["reference_top3_onnxruntime"][image]
    assert [name for name, _ in top3] == [name for name, _ in expected]
    assert [p for _, p in top3] == pytest.approx([p for _, p in expected], abs=2e-4)
