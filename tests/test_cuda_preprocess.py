"""Image pre-processing on CUDA (edgeinfer/backends/cuda/preprocess.py, CudaExecutable.device_input).

Here: the preprocess kernels compiled as CUDA (nvcc, through the compat header) take the arguments the pre-processor
passes; through a stand-in CuPy whose two preprocess kernels are their NumPy re-writing (preprocess_kernels_numpy.py),
the pre-processor's copies, buffers and launches give ``prepare_input``'s tensor bit for bit, written into the
executable's input region, launched outside the captured graphs, and ``run(..., filled_on_device=...)`` uploads
nothing over it. On a CUDA device (skipped elsewhere, with the reason): bit-equality with the PIL path on the shared
photos and odd frame sizes, and ``Session.run(image)`` through the device path giving the reference detections."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from preprocess_kernels_numpy import KERNELS, POINTERS
from test_cuda_backend import H200, FakeArray, FakeCuda, host_split_graph, needs_gpu, usable_cuda_device

from conftest import IMAGES, manifest, shared_model, tiny_graph
from edgeinfer.backends.cuda import program_cache
from edgeinfer.errors import InputError
from edgeinfer.ir import HOST
from edgeinfer.passes.memory_plan import plan_memory
from edgeinfer.pipelines.config import resolve_pipeline
from edgeinfer.pipelines.preprocess import prepare_input
from edgeinfer.pipelines.resample_plan import DeviceFrameTables, output_tensor, plan_frame

RNG = np.random.default_rng(2)
DETECTION_PRESETS = ("yolox", "fastestdet", "ultraface")


# ---------------------------------------------------------------- the CUDA kernels' parameters (nvcc, no GPU)


@pytest.mark.parametrize("out_float", [0, 1])
def test_preprocess_kernels_take_the_arguments_the_preprocessor_passes(out_float, tmp_path):
    from test_cuda_sources import NVCC, compile_ptx, ptx_entries

    if NVCC is None:
        pytest.skip("nvcc not found (the CUDA toolkit compiles the CUDA sources)")
    from edgeinfer.backends.cuda.sources import program_source

    entries = ptx_entries(compile_ptx(program_source("preprocess", {"OUT_FLOAT": out_float}), tmp_path, "pre"))
    pipeline = resolve_pipeline("yolox", overrides={} if out_float else {"dtype": "uint8"})
    tables = DeviceFrameTables.upload(plan_frame(640, 480, pipeline), lambda a: "ptr", lambda nbytes: "ptr")
    kinds = lambda args: ["i32" if isinstance(a, np.int32) else "ptr" for a in args]  # noqa: E731
    assert entries["resample_first"] == kinds(tables.first_args("ptr", 640))
    assert entries["resample_store"] == kinds(tables.store_args(pipeline, output_tensor(pipeline), "ptr", "ptr"))


# ---------------------------------------------------------------- through a stand-in CuPy


class DeviceBytes(FakeArray):
    """A stand-in device array of bytes with the ``nbytes`` the pre-processor checks."""

    @property
    def nbytes(self) -> int:
        return self.host.nbytes

    def __getitem__(self, index):
        return DeviceBytes(self.host[index])


class StandInEvent:
    def __init__(self, disable_timing: bool = False):
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        pass


def emulated_kernel(fake: FakeCuda, name: str, out_dtype: np.dtype):
    """A preprocess kernel that runs its NumPy re-writing on the stand-in's memory, after checking its grid."""

    class Kernel:
        max_threads_per_block = 1024

        def __call__(self, grid, block, args):
            assert fake.capturing is None, "pre-processing launches stay out of the captured graphs"
            assert all(isinstance(a, (DeviceBytes, np.int32)) for a in args), args
            work = (args[8], args[9]) if name == "resample_first" else (args[16], args[17])
            for g, b, w in zip(grid, block, work):  # every work item covered, no block wholly idle
                assert g * b >= w > (g - 1) * b
            assert grid[2] == block[2] == 1 and block[0] * block[1] <= self.max_threads_per_block
            fake.launched.append((name, grid, block, args))
            values = list(args)
            for position, dtype in POINTERS[name].items():
                raw = args[position].host
                dtype = np.dtype(dtype or out_dtype)
                values[position] = raw[: raw.size // dtype.itemsize * dtype.itemsize].view(dtype)
            KERNELS[name](*values)

    return Kernel()


@pytest.fixture
def stand_in(monkeypatch):
    fake = FakeCuda()
    fake.module.zeros = fake.module.empty = lambda n, dtype: DeviceBytes(np.full(n, 0xCD, np.uint8))
    fake.module.cuda.Event = StandInEvent
    try:  # a real CuPy (the GPU machine): the modules bind it when imported, the stand-in is patched in below
        import cupy  # noqa: F401
    except Exception:  # noqa: BLE001 - no CuPy (or no CUDA for it): the modules import under the stand-in
        monkeypatch.setitem(sys.modules, "cupy", fake.module)
        monkeypatch.setitem(sys.modules, "cupyx", fake.pinned)
    from edgeinfer.backends.cuda import executor, preprocess

    for module in (executor, preprocess):
        monkeypatch.setattr(module, "cupy", fake.module)
        monkeypatch.setattr(module, "cupyx", fake.pinned)

    def load_module(source, options, info):
        if "resample_first" not in source:
            return types.SimpleNamespace(get_function=fake.kernel)
        out_dtype = np.dtype(np.float32 if "#define OUT_FLOAT 1" in source else np.uint8)
        return types.SimpleNamespace(get_function=lambda name: emulated_kernel(fake, name, out_dtype))

    monkeypatch.setattr(program_cache, "load_module", load_module)
    monkeypatch.setattr(program_cache, "compile_ahead", lambda sources, options, info: 0)
    return fake


def stand_in_preprocessor(fake: FakeCuda, pipeline):
    from edgeinfer.backends.cuda.preprocess import CudaPreprocessor

    return CudaPreprocessor(H200, fake.module.cuda.Device(0), fake.module.cuda.Stream(non_blocking=True), pipeline)


@pytest.mark.parametrize("preset", ["yolox", "mobilenet_qdq", "ultraface", "squeezenet"])
def test_preprocessor_equals_prepare_input_through_a_stand_in_cupy(stand_in, preset):
    pipeline = resolve_pipeline(preset)
    pre = stand_in_preprocessor(stand_in, pipeline)
    frames = [RNG.integers(0, 256, hw, dtype=np.uint8) for hw in ((480, 640, 3), (97, 1203, 3), (480, 640, 3),
                                                                  (1, 1, 3), (700, 300, 3))]  # fmt: skip
    frames.append(RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)[10:250:2, 5:390:3])  # not contiguous
    for frame in frames:  # sizes grow, shrink and repeat: the frame buffer and the cached tables follow
        tensor, context = pre.run(frame)
        expected, expected_context = prepare_input(frame, pipeline)
        assert tensor.dtype == expected.dtype and context == expected_context
        assert np.array_equal(tensor, expected), f"{int((tensor != expected).sum())} elements differ"
    assert len(pre._tables) == 5
    assert [name for name, *_ in stand_in.launched[:2]] == ["resample_first", "resample_store"]


def test_preprocessor_refuses_bad_frames_and_small_buffers(stand_in):
    pre = stand_in_preprocessor(stand_in, resolve_pipeline("yolox"))
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32)):
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            pre.run(bad)
    with pytest.raises(ValueError, match="resizes to"):
        pre.run(np.zeros((1, 4000, 3), np.uint8))
    with pytest.raises(ValueError, match="bytes"):
        pre.run(np.zeros((8, 8, 3), np.uint8), out=DeviceBytes(np.zeros(pre.nbytes // 2, np.uint8)))
    assert stand_in.launched == []  # nothing was queued for a refused frame


@pytest.mark.parametrize("graphs", ["1", "0"])
def test_session_path_fills_the_input_region_and_run_skips_its_upload(stand_in, monkeypatch, graphs):
    # What Session.run(img) does on CUDA: pre-process into device_input on the model's stream, then run the graph.
    from edgeinfer.backends.cuda.executor import CudaExecutable
    from edgeinfer.backends.cuda.preprocess import CudaPreprocessor

    monkeypatch.setenv("EDGEINFER_CUDA_GRAPHS", graphs)
    graph = tiny_graph()
    graph.memory_plan = plan_memory(graph)
    exe = CudaExecutable(graph, H200)
    pipeline = resolve_pipeline("mobilenet", overrides={"size": [4, 4]})
    pre = exe.device_preprocessor(pipeline)
    assert isinstance(pre, CudaPreprocessor) and pre.stream is exe.stream
    region = exe.device_input("x")
    start = exe.layout.offsets["x"]
    assert region.host.ctypes.data == exe.memory.host.ctypes.data + start and region.nbytes == 4 * 3 * 4 * 4
    frame = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    buffer, context = pre.run(frame, out=region)
    assert buffer is region
    expected, expected_context = prepare_input(frame, pipeline)
    assert context == expected_context
    written = exe.memory.host[start : start + expected.nbytes].view(np.float32).reshape(expected.shape)
    assert np.array_equal(written, expected)
    outputs = exe.run({}, filled_on_device=frozenset({"x"}))  # feeds hold no "x": an upload would fail
    assert np.array_equal(written, expected)  # and nothing was copied over it
    names = [name for name, *_ in stand_in.launched]
    assert names[:2] == ["resample_first", "resample_store"] and len(names) == 4  # then the graph's two kernels
    assert outputs["y"].shape == (1, 3, 4, 4)


def test_device_input_is_none_where_the_host_reads_the_input(stand_in):
    from edgeinfer.backends.cuda.executor import CudaExecutable

    graph = tiny_graph()
    graph.nodes[0].placement = HOST  # Relu(x) on the host: x must come from the host
    graph.memory_plan = plan_memory(graph)
    exe = CudaExecutable(graph, H200)
    assert exe.device_input("x") is None and exe.device_input("nope") is None
    with pytest.raises(InputError, match="cannot be filled on the device"):
        exe.run({}, filled_on_device=frozenset({"x"}))
    split = CudaExecutable(host_split_graph(), H200)
    assert split.device_input("x") is not None and split.device_input("y") is None  # y: not a graph input


# ---------------------------------------------------------------- on a CUDA device


def photos() -> list:
    return sorted(p for p in IMAGES.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def load(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@needs_gpu
@pytest.mark.parametrize("preset", [*DETECTION_PRESETS, "mobilenet", "mobilenet_qdq", "squeezenet"])
def test_bit_equal_to_the_pil_path_on_the_gpu(preset):
    from edgeinfer.backends.cuda.preprocess import CudaPreprocessor

    if not photos():
        pytest.skip(f"no photos in {IMAGES} (EDGEINFER_SHARED)")
    pipeline = resolve_pipeline(preset)
    pre = CudaPreprocessor.for_device(usable_cuda_device().spec, pipeline)
    frames = [load(path) for path in photos()]
    if preset in DETECTION_PRESETS:  # camera sizes, odd sizes and both pass orders
        sizes = ((480, 640), (1080, 1920), (1, 1), (7, 1), (225, 223), (449, 400), (3000, 4000))
        frames += [RNG.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in sizes]
    failures = []
    for index, frame in enumerate(frames):
        tensor, context = pre.run(frame)
        expected, expected_context = prepare_input(frame, pipeline)
        if context != expected_context or not np.array_equal(tensor, expected):
            failures.append(f"frame {index} {frame.shape}: {int((tensor != expected).sum())} elements differ")
    assert not failures, failures


@needs_gpu
@pytest.mark.parametrize("preset", DETECTION_PRESETS)
def test_session_run_image_preprocesses_on_the_gpu_and_finds_the_reference_detections(preset, tmp_path):
    pytest.importorskip("onnx")
    from test_detection import DETECTORS, match

    from edgeinfer import Session
    from edgeinfer.backends.cuda.preprocess import CudaPreprocessor
    from edgeinfer.compiler import compile_model
    from edgeinfer.pack import write_pack
    from edgeinfer.pipelines.config import default_labels

    path = shared_model(DETECTORS[preset])
    graph = compile_model(str(path), pipeline=resolve_pipeline(preset))
    graph.metadata["labels"] = default_labels(resolve_pipeline(preset), path)
    write_pack(graph, tmp_path / f"{preset}.pack")
    session = Session(tmp_path / f"{preset}.pack", device="cuda")
    name = session.pipeline["input"]
    assert isinstance(session._device_preprocessor, CudaPreprocessor)
    assert session._executable.device_input(name) is not None  # run(image) takes the device path
    reference = next(e for e in manifest() if e["file"] == path.name)["reference_detections_onnxruntime"]
    images = {image: IMAGES / image for image in reference if (IMAGES / image).exists()}
    if not images:
        pytest.skip(f"none of the {preset} reference images are in {IMAGES}")
    for image, file in images.items():
        detections = session.run(file)
        assert match(detections, reference[image]) == len(reference[image]) == len(detections), (image, detections)
        tensor, context = prepare_input(file, session.pipeline)  # the host path: the same tensor, the same boxes
        host = session.postprocess(session.run({name: tensor}), context)
        assert np.array_equal(detections.boxes, host.boxes) and np.array_equal(detections.scores, host.scores)
