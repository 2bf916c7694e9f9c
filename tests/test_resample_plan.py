"""The API-independent half of device pre-processing (edgeinfer/pipelines/resample_plan.py), with no device: the
kernels of kernels/opencl/preprocess.cl, re-written in NumPy (preprocess_kernels_numpy.py) and driven by the shared
weight tables, scratch geometry, LUT and argument lists exactly as the OpenCL and CUDA pre-processors launch them,
equal ``prepare_input`` (PIL + NumPy) bit for bit; the per-size cache; the argument lists against the kernel text;
the module imports no GPU driver."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from preprocess_kernels_numpy import resample_first, resample_store

from conftest import IMAGES, REPO
from edgeinfer.pipelines.config import resolve_pipeline
from edgeinfer.pipelines.preprocess import prepare_input, to_tensor
from edgeinfer.pipelines.presets import PRESETS
from edgeinfer.pipelines.resample_plan import (
    DeviceFrameTables,
    FrameSizeCache,
    check_frame,
    lut_values,
    output_tensor,
    plan_frame,
)

RNG = np.random.default_rng(1)


def emulate(frame: np.ndarray, pipeline: dict) -> tuple[np.ndarray, dict]:
    """What a device pre-processor computes, with flat NumPy arrays for device buffers."""
    check_frame(frame)
    h, w = frame.shape[:2]
    tensor = output_tensor(pipeline)
    tables = DeviceFrameTables.upload(plan_frame(w, h, pipeline), lambda a: a.ravel().copy(),
                                      lambda nbytes: np.full(nbytes, 0xAB, np.uint8))  # fmt: skip
    resample_first(*tables.first_args(np.ascontiguousarray(frame).ravel(), w))
    out = np.full(int(np.prod(tensor.shape)), 77, tensor.dtype)  # every element must be written
    resample_store(*tables.store_args(pipeline, tensor, lut_values(pipeline).ravel(), out))
    return out.reshape(tensor.shape), dict(tables.plan.geometry.context)


def check(frame: np.ndarray, pipeline: dict) -> None:
    expected, expected_context = prepare_input(frame, pipeline)
    actual, context = emulate(frame, pipeline)
    assert actual.dtype == expected.dtype and context == expected_context
    assert np.array_equal(actual, expected), f"{int((actual != expected).sum())} elements differ"


def photos() -> list:
    paths = sorted(p for p in IMAGES.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths or [pytest.param(None, marks=pytest.mark.skip(reason=f"no photos in {IMAGES} (EDGEINFER_SHARED)"))]


@pytest.mark.parametrize("path", photos(), ids=lambda p: getattr(p, "name", "none"))
def test_tables_reproduce_pil_on_shared_photos_for_every_preset(path):
    from PIL import Image

    with Image.open(path) as im:
        frame = np.asarray(im.convert("RGB"))
    for preset in sorted(PRESETS):
        check(frame, resolve_pipeline(preset))


@pytest.mark.parametrize("hw", [(1, 1), (1, 9), (7, 1), (3, 5), (225, 223), (240, 320), (1080, 1920), (2000, 2600)])
def test_tables_reproduce_pil_on_odd_frame_sizes(hw):
    frame = RNG.integers(0, 256, (*hw, 3), dtype=np.uint8)
    for preset in ("yolox", "mobilenet", "squeezenet", "mobilenet_qdq", "ultraface"):
        check(frame, resolve_pipeline(preset))


@pytest.mark.parametrize(
    "overrides",
    [{"resize": "letterbox-centre", "pad_value": 0}, {"resize": "letterbox-topleft", "size": [240, 320]},
     {"resize": "centre-crop", "size": [160, 224]}, {"resize": "square-crop", "size": [96, 128]},
     {"layout": "NHWC", "channel_order": "BGR", "mean": [1.5, 100.0, 200.0], "std": [0.5, 3, 70]},
     {"dtype": "uint8", "resize": "letterbox-centre"}, {"scale": 1 / 255, "resize": "plain", "size": [17, 33]}],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)  # fmt: skip
def test_tables_reproduce_pil_for_every_mode_layout_and_dtype(overrides):
    pipeline = resolve_pipeline("yolox", overrides=overrides)
    for hw in ((5, 3), (480, 640), (700, 300)):
        check(RNG.integers(0, 256, (*hw, 3), dtype=np.uint8), pipeline)


def test_pass_order_follows_pil_on_both_sides_of_the_boundary():
    pipeline = resolve_pipeline("fastestdet")  # plain 352x352
    for hw in ((448, 400), (449, 400), (450, 400), (353, 352), (2000, 353)):
        check(RNG.integers(0, 256, (*hw, 3), dtype=np.uint8), pipeline)


def test_scratch_covers_only_what_the_second_pass_reads():
    pipeline = resolve_pipeline("yolox")  # letterbox-topleft 416: a 640x480 frame resizes to 416x312
    plan = plan_frame(640, 480, pipeline)
    assert not plan.first.vertical and plan.tmp_hw == (480, 416) and plan.offset == 0
    assert plan.first_work == (416, 480) and plan.store_work == (416, 416) and plan.geometry.place == (0, 0, 416, 312)
    bounds = plan.second.bounds
    assert bounds[:, 0].min() == 0 and (bounds[:, 0] + bounds[:, 1]).max() == plan.tmp_hw[0]
    crop = plan_frame(640, 480, resolve_pipeline("mobilenet"))  # centre-crop: 256 short side, the centred 224
    assert crop.tmp_hw[1] == 224 and crop.offset > 0  # rows of the frame above the window are never filtered


def test_lut_is_what_to_tensor_makes_of_each_pixel_value():
    from PIL import Image

    for preset in ("yolox", "mobilenet", "ultraface", "fastestdet"):
        pipeline = resolve_pipeline(preset, overrides={"channel_order": "RGB", "layout": "NHWC"})
        levels = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
        want = to_tensor(Image.fromarray(levels, "RGB"), pipeline)[0, 0].T  # (3, 256)
        assert np.array_equal(lut_values(pipeline), want)


def test_output_tensor_layouts():
    nchw = output_tensor(resolve_pipeline("yolox"))
    assert nchw.shape == (1, 3, 416, 416) and nchw.strides == (416 * 416, 416, 1) and nchw.nbytes == 416 * 416 * 12
    nhwc = output_tensor(resolve_pipeline("mobilenet_qdq"))
    assert nhwc.shape == (1, 224, 224, 3) and nhwc.strides == (1, 672, 3) and nhwc.dtype == np.uint8
    with pytest.raises(ValueError, match="no 'size'"):
        output_tensor({**resolve_pipeline("yolox"), "size": None})


def test_frame_size_cache_keeps_the_most_recent_sizes():
    built, dropped = [], []
    cache = FrameSizeCache(lambda w, h: built.append((w, h)) or (w, h), on_drop=dropped.append, capacity=2)
    for size in ((1, 1), (2, 2), (1, 1), (3, 3), (2, 2)):
        assert cache.get(*size) == size
    assert built == [(1, 1), (2, 2), (3, 3), (2, 2)] and dropped == [(2, 2), (1, 1)] and len(cache) == 2


def kernel_parameters() -> dict[str, list[str]]:
    """kernel -> "ptr" or "int" per parameter, from preprocess.cl."""
    text = (REPO / "kernels" / "opencl" / "preprocess.cl").read_text()
    return {name: ["ptr" if "*" in p else "int" for p in params.split(",")]
            for name, params in re.findall(r"__kernel\s+void\s+(\w+)\s*\(([^)]*)\)", text)}  # fmt: skip


def test_argument_lists_match_the_kernel_signatures():
    pipeline = resolve_pipeline("yolox")
    tables = DeviceFrameTables.upload(plan_frame(640, 480, pipeline), lambda a: "buffer", lambda n: "buffer")
    kinds = lambda args: ["int" if isinstance(a, np.int32) else "ptr" for a in args]  # noqa: E731
    signatures = kernel_parameters()
    assert kinds(tables.first_args("buffer", 640)) == signatures["resample_first"]
    assert kinds(tables.store_args(pipeline, output_tensor(pipeline), "lut", "out")) == signatures["resample_store"]


def test_bad_frames_are_refused():
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8)):
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            check_frame(bad)


def test_imports_no_gpu_driver():
    blocker = (
        "import importlib.abc, sys\n"
        "class Blocker(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pyopencl', 'cupy', 'cupyx'):\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "import edgeinfer.pipelines.resample_plan\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
