"""Pre-processing on the OpenCL device (edgeinfer/backends/opencl/preprocess.py) against the CPU path
``prepare_input`` (PIL + NumPy): every preset on the shared photos, odd frame sizes from 1x1 to 4000x3000,
every resize mode, layout and dtype. The device path is integer arithmetic with PIL's own fixed-point weights
plus a NumPy-computed LUT, so the tensors must be equal, not just close. Skips when no OpenCL device is usable."""

from __future__ import annotations

import numpy as np
import pytest

cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed")

from conftest import IMAGES, usable_opencl_device  # noqa: E402
from edgeinfer.pipelines.config import resolve_pipeline  # noqa: E402
from edgeinfer.pipelines.preprocess import prepare_input  # noqa: E402
from edgeinfer.pipelines.presets import PRESETS  # noqa: E402

DEVICE = usable_opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no usable OpenCL device (see `edgeinfer devices`)")
RNG = np.random.default_rng(0)
_PREPROCESSORS: dict[str, object] = {}


def preprocessor(pipeline: dict):
    """One DevicePreprocessor per distinct pipeline (building the program is the slow part)."""
    from edgeinfer.backends.opencl.preprocess import DevicePreprocessor

    key = repr(sorted(pipeline.items()))
    if key not in _PREPROCESSORS:
        _PREPROCESSORS[key] = DevicePreprocessor.for_device(DEVICE.spec, pipeline)
    return _PREPROCESSORS[key]


def level_diff(actual: np.ndarray, expected: np.ndarray, pipeline: dict) -> float:
    """Largest difference in uint8 pixel levels (before scale/mean/std)."""
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    if pipeline["dtype"] == "float32":
        axis = 1 if pipeline["layout"] == "NCHW" else 3
        shape = [1, 1, 1, 1]
        shape[axis] = 3
        diff = diff * np.abs(np.asarray(pipeline["std"]).reshape(shape)) / abs(pipeline["scale"])
    return float(diff.max()) if diff.size else 0.0


def check(frame: np.ndarray, pipeline: dict) -> None:
    expected, expected_context = prepare_input(frame, pipeline)
    actual, context = preprocessor(pipeline).run(frame)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert context == expected_context
    assert np.array_equal(actual, expected), f"max difference {level_diff(actual, expected, pipeline)} levels"


def photos() -> list:
    paths = sorted(p for p in IMAGES.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths or [pytest.param(None, marks=pytest.mark.skip(reason=f"no photos in {IMAGES} (EDGEINFER_SHARED)"))]


def load(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("path", photos(), ids=lambda p: getattr(p, "name", "none"))
def test_presets_on_shared_photos(preset, path):
    check(load(path), resolve_pipeline(preset))


SIZE_IDS = lambda hw: f"{hw[1]}x{hw[0]}"  # noqa: E731
ODD_SIZES = [(1, 1), (1, 9), (7, 1), (3, 5), (225, 223), (224, 224), (240, 320), (480, 640), (3000, 4000)]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("hw", ODD_SIZES, ids=SIZE_IDS)
def test_presets_on_odd_sizes(preset, hw):
    check(RNG.integers(0, 256, (*hw, 3), dtype=np.uint8), resolve_pipeline(preset))


VARIANTS = {
    "letterbox-centre": {"resize": "letterbox-centre", "pad_value": 0},
    "letterbox-topleft-nonsquare": {"resize": "letterbox-topleft", "size": [240, 320], "pad_value": 255},
    "centre-crop-nonsquare": {"resize": "centre-crop", "size": [160, 224]},
    "square-crop-nonsquare": {"resize": "square-crop", "size": [96, 128]},
    "nhwc-float-bgr": {"layout": "NHWC", "channel_order": "BGR", "mean": [1.5, 100.0, 200.0], "std": [0.5, 3, 70]},
    "nchw-uint8": {"dtype": "uint8", "resize": "letterbox-centre"},
    "scale-only": {"scale": 1 / 255, "resize": "plain", "size": [17, 33]},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("hw", [(1, 1), (5, 3), (480, 640), (1080, 1920), (700, 300)], ids=SIZE_IDS)
def test_every_mode_layout_and_dtype(variant, hw):
    pipeline = resolve_pipeline("yolox", overrides=VARIANTS[variant])
    check(RNG.integers(0, 256, (*hw, 3), dtype=np.uint8), pipeline)


def test_smooth_frame_and_extreme_values():
    # Saturated and flat regions exercise the clip8 clamp and the rounding of (nearly) exact weight sums.
    y, x = np.mgrid[0:1080, 0:1920]
    frame = np.stack([(x * 255 // 1919), (y * 255 // 1079), np.where((x // 7 + y // 5) % 2, 255, 0)], -1)
    for preset in ("mobilenet", "yolox", "fastestdet"):
        check(frame.astype(np.uint8), resolve_pipeline(preset))


def test_pass_order_boundary():
    # PIL (Pillow >= 13) goes vertical first when h - oh > 2 * (w - ow): frames on both sides of the boundary.
    pipeline = resolve_pipeline("fastestdet")  # plain 352x352
    for hw in ((448, 400), (449, 400), (450, 400), (353, 352), (354, 352), (360, 353), (2000, 353)):
        check(RNG.integers(0, 256, (*hw, 3), dtype=np.uint8), pipeline)


def test_writes_into_a_device_buffer_and_reuses_tables():
    from edgeinfer.backends.opencl.preprocess import DevicePreprocessor

    pipeline = resolve_pipeline("ultraface")
    pre = DevicePreprocessor.for_device(DEVICE.spec, pipeline)
    out = cl.Buffer(pre.context, cl.mem_flags.READ_WRITE, pre.nbytes)
    frames = [RNG.integers(0, 256, hw, dtype=np.uint8) for hw in ((480, 640, 3), (300, 200, 3), (480, 640, 3))]
    for frame in frames:  # alternating sizes: cached tables must follow the frame size
        buffer, context = pre.run(frame, out=out)
        assert buffer is out
        host = np.empty(pre.shape, pre.dtype)
        cl.enqueue_copy(pre.queue, host, out, is_blocking=True)
        expected, expected_context = prepare_input(frame, pipeline)
        assert np.array_equal(host, expected) and context == expected_context
    assert len(pre._tables) == 2
    with pytest.raises(ValueError, match="bytes"):
        pre.run(frames[0], out=cl.Buffer(pre.context, cl.mem_flags.READ_WRITE, pre.nbytes // 2))


def test_non_contiguous_frame_and_bad_frames():
    pipeline = resolve_pipeline("squeezenet")
    big = RNG.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    check(big[10:150:2, 5:250:3], pipeline)
    for bad in (big[..., :2], big.astype(np.float32), big[..., 0]):
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            preprocessor(pipeline).run(bad)


def test_frame_that_resizes_to_nothing_raises_like_the_cpu_path():
    pipeline = resolve_pipeline("yolox")
    frame = np.zeros((1, 4000, 3), np.uint8)
    with pytest.raises(ValueError):
        prepare_input(frame, pipeline)
    with pytest.raises(ValueError, match="resizes to"):
        preprocessor(pipeline).run(frame)


def test_shares_an_executables_queue():
    # What Session.run(img) does on an OpenCL session: pre-process on the model's queue, then run the graph.
    from conftest import tiny_graph
    from edgeinfer.backends import opencl
    from edgeinfer.backends.opencl.preprocess import DevicePreprocessor

    executable = opencl.prepare(tiny_graph(), DEVICE.spec)
    pipeline = resolve_pipeline("mobilenet", overrides={"size": [4, 4]})
    pre = DevicePreprocessor.for_executable(executable, pipeline)
    assert pre.queue is executable.queue
    frame = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    tensor, context = pre.run(frame)
    expected, expected_context = prepare_input(frame, pipeline)
    assert np.array_equal(tensor, expected) and context == expected_context
    np.testing.assert_array_equal(executable.run({"x": tensor})["y"], executable.run({"x": expected})["y"])
