"""The CUDA backend: registration and device choice without CuPy; the executor's steps, layout and CUDA-graph capture
through a stand-in CuPy (host memory, kernels recorded); and, on a machine with a usable CUDA device, every shared
model against onnxruntime, graphs on and off, a second load compiling nothing and the detectors' detections."""

from __future__ import annotations

import ctypes
import dataclasses
import sys
import types
from contextlib import nullcontext

import numpy as np
import pytest

from conftest import IMAGES, MODELS, conv_pack, manifest, shared_model, tiny_graph
from edgeinfer import Session
from edgeinfer.backends import get_backend, resolve_device
from edgeinfer.backends.base import DeviceInfo
from edgeinfer.backends.cuda import program_cache, runtime
from edgeinfer.errors import DeviceError
from edgeinfer.ir import HOST, Node, TensorInfo
from edgeinfer.pack import write_pack
from edgeinfer.passes.memory_plan import plan_memory

REL_L2_TOL = 1e-4


def usable_cuda_device() -> DeviceInfo | None:
    usable = [d for d in runtime.list_devices() if d.usable]
    return usable[0] if usable else None


def cuda_reason() -> str:
    return "; ".join(f"{d.spec}: {d.reason}" for d in runtime.list_devices())


needs_gpu = pytest.mark.skipif(usable_cuda_device() is None, reason=f"no usable CUDA device ({cuda_reason()})")


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ModuleNotFoundError
    runtime._probe.cache_clear()
    yield
    runtime._probe.cache_clear()


# ---------------------------------------------------------------- without CuPy


def test_session_on_cuda_without_cupy_says_why(no_cupy, tmp_path):
    write_pack(_planned(tiny_graph()), tmp_path / "tiny.pack")
    with pytest.raises(DeviceError, match="no usable CUDA device.*cupy not installed"):
        Session(tmp_path / "tiny.pack", device="cuda")
    with pytest.raises(DeviceError, match="no CUDA device 'cuda:3': cupy not installed"):
        Session(tmp_path / "tiny.pack", device="cuda:3")


def test_auto_skips_unusable_cuda(no_cupy, monkeypatch):
    monkeypatch.delenv("EDGEINFER_DEVICE", raising=False)
    backend, spec = resolve_device("auto")
    assert backend.NAME != "cuda" and not spec.startswith("cuda")


def test_auto_prefers_a_usable_cuda_device(monkeypatch):
    cuda = DeviceInfo("cuda", "cuda:0", "NVIDIA H200", "gpu")
    opencl = DeviceInfo("opencl", "opencl:0:0", "NVIDIA H200", "gpu")
    monkeypatch.setattr("edgeinfer.backends.list_all_devices", lambda: [opencl, cuda])
    backend, spec = resolve_device("auto")
    assert (backend.NAME, spec) == ("cuda", "cuda:0")


def test_devices_command_lists_the_cuda_row_with_its_reason(no_cupy, capsys):
    from edgeinfer.cli import main

    main(["devices"])
    out = capsys.readouterr().out
    assert "backend cuda: available" in out
    assert "cuda" in out and "NOT usable: cupy not installed" in out


# ---------------------------------------------------------------- the executor through a stand-in CuPy


class FakeArray:
    """Device memory as host bytes: ``data.ptr`` is a real address, so the executor's memcpys really copy."""

    def __init__(self, host: np.ndarray):
        self.host = host
        self.data = types.SimpleNamespace(ptr=host.ctypes.data)

    def __getitem__(self, index):
        return FakeArray(self.host[index])


class FakeCuda:
    """The few pieces of ``cupy`` the executor uses; kernel launches are recorded (or captured), never run."""

    def __init__(self):
        self.launched: list[tuple[str, tuple, tuple, tuple]] = []
        self.captures = 0
        self.capturing: list | None = None
        fake = self

        class Stream:
            ptr = 7

            def __init__(self, non_blocking=False):
                assert non_blocking

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                assert fake.capturing is None

            def begin_capture(self):
                fake.capturing = []

            def end_capture(self):
                calls, fake.capturing = fake.capturing, None
                fake.captures += 1
                return types.SimpleNamespace(launch=lambda stream: fake.launched.extend(calls))

        def memcpy(dst, src, nbytes, kind, stream=None):
            assert fake.capturing is None, "copies stay outside the captured graphs"
            ctypes.memmove(dst, src, nbytes)

        self.module = types.ModuleType("cupy")
        self.module.uint8 = np.uint8
        self.module.zeros = lambda n, dtype: FakeArray(np.zeros(n, np.uint8))
        self.module.cuda = types.SimpleNamespace(
            Device=lambda ordinal: _FakeDevice(),
            Stream=Stream,
            Event=lambda: types.SimpleNamespace(record=lambda stream: None),
            get_elapsed_time=lambda start, end: 0.001,
            runtime=types.SimpleNamespace(memcpy=memcpy, memcpyAsync=memcpy),
        )
        self.pinned = types.ModuleType("cupyx")
        self.pinned.empty_pinned = lambda shape, dtype: np.empty(shape, dtype)

    def kernel(self, name: str):
        fake = self

        class Kernel:
            max_threads_per_block = 256

            def __call__(self, grid, block, args):
                (fake.launched if fake.capturing is None else fake.capturing).append((name, grid, block, args))

        return Kernel()


class _FakeDevice(nullcontext):
    def synchronize(self):
        pass


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    try:  # a real CuPy (the GPU machine): the executor binds it when imported, the stand-in is patched in below
        import cupy  # noqa: F401
    except Exception:  # noqa: BLE001 - no CuPy (or no CUDA for it): the executor imports under the stand-in
        monkeypatch.setitem(sys.modules, "cupy", fake.module)
        monkeypatch.setitem(sys.modules, "cupyx", fake.pinned)
    from edgeinfer.backends.cuda import executor

    monkeypatch.setattr(executor, "cupy", fake.module)
    monkeypatch.setattr(executor, "cupyx", fake.pinned)
    module = types.SimpleNamespace(get_function=fake.kernel)
    monkeypatch.setattr(program_cache, "load_module", lambda source, options, info: module)
    monkeypatch.setattr(program_cache, "compile_ahead", lambda sources, options, info: 0)
    return fake


H200 = DeviceInfo("cuda", "cuda:0", "NVIDIA H200", "gpu", "nvidia-h200-sm90", "nvidia-cuda-gpu", "simt",
                  details={"ordinal": 0, "max_work_group_size": 1024})  # fmt: skip


def _planned(graph):
    graph.memory_plan = plan_memory(graph)
    return graph


def host_split_graph():
    """x -> Relu (device) -> Add b (host) -> Relu (device) -> y: two device segments around a host node."""
    graph = tiny_graph()
    graph.tensors["y2"] = TensorInfo("y2", (1, 3, 4, 4), "float32")
    graph.nodes[1].placement = HOST
    graph.nodes.append(Node("relu1", "Relu", ["y"], ["y2"]))
    graph.outputs = ["y2"]
    return _planned(graph)


@pytest.mark.parametrize("graphs", ["1", "0"])
def test_steps_segments_and_copies_through_a_stand_in_cupy(fake_cuda, monkeypatch, graphs):
    from edgeinfer.backends.cuda.executor import CudaExecutable

    monkeypatch.setenv("EDGEINFER_CUDA_GRAPHS", graphs)
    exe = CudaExecutable(host_split_graph(), H200)
    assert [s.kind for s in exe.steps] == ["to_device", "segment", "to_host", "host", "to_device", "segment",
                                           "to_host"]  # fmt: skip
    assert exe.segments() == [1, 1] and fake_cuda.captures == (2 if graphs == "1" else 0)
    assert fake_cuda.launched == []  # capturing runs nothing
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) - 20
    out = exe.run({"x": x})
    assert len(fake_cuda.launched) == 2
    # The input reached its device region (through its pinned buffer); the kernels' tensor arguments point
    # into the one allocation, the 32-bit scalars stay numpy scalars.
    memory = exe.memory.host
    start = exe.layout.offsets["x"]
    np.testing.assert_array_equal(memory[start : start + x.nbytes].view(np.float32).reshape(x.shape), x)
    for _, grid, block, args in fake_cuda.launched:
        assert len(grid) == len(block) == 3
        for arg in args:
            assert isinstance(arg, (FakeArray, np.int32, np.uint32, np.float32))
            if isinstance(arg, FakeArray):
                assert memory.ctypes.data <= arg.data.ptr < memory.ctypes.data + memory.nbytes
    # Nothing computed y on this stand-in: the host Add saw zeros, so y2 is what the device region holds (zeros).
    assert out["y2"].shape == (1, 3, 4, 4) and out["y2"].dtype == np.float32
    assert exe.profile({"x": x}, repeat=2)[0]["time_ms"] >= 0


def test_an_fp16_pack_stores_half_and_crosses_the_host_boundary_as_float32(fake_cuda):
    """fp16 packs (planning/half_storage.py): device tensors and constants are half; what is copied in and out goes
    as float32 through a staging region, converted on the device around the copy."""
    from edgeinfer.backends.cuda.executor import CudaExecutable

    graph = host_split_graph()
    graph.metadata["precision"] = "fp16"
    exe = CudaExecutable(graph, H200)
    assert exe.half_storage and exe.graph.tensors["r"].dtype == "float16"
    copies = [s for s in exe.steps if s.kind in ("to_device", "to_host")]
    assert [[c.label for c in s.calls] for s in copies] == [["half_from_float"], ["float_from_half"],
                                                           ["half_from_float"], ["float_from_half"]]  # fmt: skip
    assert all(exe.pinned[s.name].dtype == np.float32 for s in copies)
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) - 20
    out = exe.run({"x": x})
    start = exe.staging["x"]  # the upload lands in x's staging region, as float32
    np.testing.assert_array_equal(exe.memory.host[start : start + x.nbytes].view(np.float32).reshape(x.shape), x)
    launched = [name for name, *_ in fake_cuda.launched]
    assert launched == ["half_from_float", "unary_chain", "float_from_half", "half_from_float", "unary_chain",
                        "float_from_half"]  # fmt: skip
    assert out["y2"].dtype == np.float32
    plans = [record.plan for record in exe.records if record.plan]
    assert all(launch.defines.get("DATA_HALF") == 1 for plan in plans for launch in plan.launches)


def test_constant_arrays_are_uploaded_once_where_the_kernel_reads_them(fake_cuda):
    from edgeinfer.backends.cuda.executor import CudaExecutable

    graph = _planned(tiny_graph())
    exe = CudaExecutable(graph, H200)
    assert exe.segments() == [2] and fake_cuda.captures == 1
    exe.run({"x": np.ones((1, 3, 4, 4), np.float32)})
    exe.run({"x": np.ones((1, 3, 4, 4), np.float32)})
    assert len(fake_cuda.launched) == 4  # the one graph replayed per run
    (add,) = [call for call in exe.steps[1].calls if call.label == "binary_broadcast"]
    constant = add.args[1]  # Add(r, b): b is a launch array, bound as a pointer into the allocation
    want = graph.constants["b"].ravel()
    np.testing.assert_array_equal(constant.host[: want.nbytes].view(np.float32), want)


def test_explain_names_the_borrowed_opencl_table(fake_cuda, tmp_path, monkeypatch):
    """No CUDA table yet: the convolutions take their configs from the H200's OpenCL table, and explain() says so."""
    from edgeinfer.backends.cuda.executor import CudaExecutable
    from edgeinfer.pack import read_pack

    monkeypatch.setenv("EDGEINFER_TUNED_DIR", str(tmp_path / "no-user-tables"))
    conv_pack(tmp_path / "conv.pack")
    untuned = dataclasses.replace(H200, device_key="nvidia-h200-sm90-no-cuda-table")  # H200's ships one now
    rows = CudaExecutable(read_pack(tmp_path / "conv.pack"), untuned).explain()
    assert [row["placement"] for row in rows] == ["device", "device"]
    lender = "via nvidia-cuda-nvidia-corporation-nvidia-h200 (the device's OpenCL table)"
    # the depthwise conv takes the lent config; the 1x1 conv (an implicit GEMM on GPUs, conv_gemm.py) is offered a
    # nearest direct config there, declines it for its own kernel's default, and says whose it was
    assert rows[1]["config_source"].endswith(lender), rows
    assert rows[0]["config_source"].startswith("default (the nearest") and lender in rows[0]["config_source"], rows


# ---------------------------------------------------------------- on a CUDA device


def _rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    want = want.astype(np.float64)
    return float(np.linalg.norm(got.astype(np.float64) - want) / max(np.linalg.norm(want), 1e-30))


@pytest.fixture(scope="module")
def compiled_models():
    pytest.importorskip("onnx")
    from edgeinfer.compiler import compile_model

    files = sorted(p.name for p in MODELS.glob("*.onnx")) if MODELS.is_dir() else []
    return {file: compile_model(MODELS / file) for file in files}


@needs_gpu
def test_every_shared_model_matches_onnxruntime_graphs_on_and_off(compiled_models, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    if not compiled_models:
        pytest.skip(f"no models in {MODELS}")
    from edgeinfer.backends.cuda.executor import CudaExecutable

    failures = []
    for file, graph in compiled_models.items():
        options = ort.SessionOptions()
        if any(n.op == "QuantizeLinear" for n in graph.nodes):
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        sess = ort.InferenceSession(str(MODELS / file), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {}
        for name in graph.inputs:
            info = graph.tensors[name]
            integer = np.issubdtype(np.dtype(info.dtype), np.integer)
            value = rng.integers(0, 256, info.shape) if integer else rng.uniform(-1, 1, info.shape)
            feeds[name] = value.astype(info.dtype)
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        results = {}
        for graphs in ("1", "0"):
            monkeypatch.setenv("EDGEINFER_CUDA_GRAPHS", graphs)
            exe = CudaExecutable(graph, usable_cuda_device())
            results[graphs] = [exe.run(feeds), exe.run(feeds)]  # a replay after the first
        for name, ref in want.items():
            on, again, off = results["1"][0][name], results["1"][1][name], results["0"][0][name]
            if not (np.array_equal(on, off, equal_nan=True) and np.array_equal(on, again, equal_nan=True)):
                failures.append(f"{file} {name}: graphs on and off (or two replays) differ")
            if np.issubdtype(ref.dtype, np.integer):
                steps = np.abs(on.astype(np.int64) - ref.astype(np.int64))
                if steps.max(initial=0) > 4 or (steps > 0).sum() > 0.01 * ref.size:
                    failures.append(f"{file} {name}: {(steps > 0).sum()} uint8 outputs differ, max {steps.max()}")
            elif not _rel_l2(on, ref) <= REL_L2_TOL:
                failures.append(f"{file} {name}: rel L2 {_rel_l2(on, ref):.2e} > {REL_L2_TOL}")
    assert not failures, failures


@needs_gpu
def test_a_second_load_compiles_nothing(tmp_path):
    path = shared_model("mobilenet_v2_1.0_224.onnx")
    pytest.importorskip("onnx")
    from edgeinfer.compiler import compile_model

    write_pack(compile_model(path), tmp_path / "m.pack")
    Session(tmp_path / "m.pack", device="cuda")
    compiled = program_cache.STATS["compiled"]
    Session(tmp_path / "m.pack", device="cuda")
    assert program_cache.STATS["compiled"] == compiled


@needs_gpu
@pytest.mark.parametrize("preset", ["yolox", "fastestdet"])
def test_detections_on_cuda_equal_the_reference(preset, tmp_path):
    pytest.importorskip("onnx")
    from test_detection import DETECTORS, match

    from edgeinfer.compiler import compile_model
    from edgeinfer.pipelines.config import default_labels, resolve_pipeline

    path = shared_model(DETECTORS[preset])
    graph = compile_model(str(path), pipeline=resolve_pipeline(preset))
    graph.metadata["labels"] = default_labels(resolve_pipeline(preset), path)  # as `edgeinfer compile` does
    write_pack(graph, tmp_path / f"{preset}.pack")
    session = Session(tmp_path / f"{preset}.pack", device="cuda")
    assert session.backend == "cuda"
    reference = next(e for e in manifest() if e["file"] == path.name)["reference_detections_onnxruntime"]
    images = {name: IMAGES / name for name in reference if (IMAGES / name).exists()}
    if not images:
        pytest.skip(f"none of the {preset} reference images are in {IMAGES}")
    for name, image in images.items():
        detections = session.run(image)
        assert match(detections, reference[name]) == len(reference[name]) == len(detections), (name, detections)


def test_cuda_is_a_registered_backend():
    assert get_backend("cuda").NAME == "cuda"


@needs_gpu
@pytest.mark.parametrize(
    "file, preset",
    [
        ("squeezenet1.1.onnx", "squeezenet"),
        ("mobilenet_v2_1.0_224.onnx", "mobilenet"),
        ("yolox_nano_416.onnx", "yolox"),
    ],
)
def test_fp16_packs_store_half_on_cuda_and_keep_the_reference_answers(file, preset, tmp_path):
    """fp16 packs (planning/half_storage.py): every float tensor half on the device; the classifiers' top-1 and the
    detector's boxes (same label, IoU >= 0.5: half storage moves boxes by a pixel or so) stay the references'."""
    pytest.importorskip("onnx")
    from test_detection import iou

    from edgeinfer.compiler import compile_model
    from edgeinfer.pipelines.config import default_labels, resolve_pipeline

    path = shared_model(file)
    pipeline = resolve_pipeline(preset)
    graph = compile_model(str(path), pipeline=pipeline, fp16=True)
    graph.metadata["labels"] = default_labels(pipeline, path)
    write_pack(graph, tmp_path / "m.pack")
    session = Session(tmp_path / "m.pack", device="cuda")
    assert session.backend == "cuda" and session._executable.half_storage
    entry = next(e for e in manifest() if e["file"] == path.name)
    reference = entry.get("reference_top3_onnxruntime") or entry["reference_detections_onnxruntime"]
    checked = 0
    for name, expected in reference.items():
        if not (IMAGES / name).exists():
            continue
        result = session.run(IMAGES / name)
        if preset == "yolox":
            pairs = [(d, r) for d in result for r in expected if d.label == r["label"] and iou(d.box, r["box"]) >= 0.5]
            assert len(result) == len(expected) and len({id(r) for _, r in pairs}) == len(expected), (name, result)
        else:
            assert result[0][0] == expected[0][0], (name, result, expected)
        checked += 1
    assert checked
