"""The NumPy backend's native C kernels (``kernels/cpu/conv_hwc.c``) against the pure NumPy paths."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.conv_channels_last import fused_epilogue
from edgeinfer.backends.numpy.kernels import KERNELS, NodeState, conv, max_pool
from edgeinfer.ops import OPS
from edgeinfer.ops.activations import apply_activation

needs_native = pytest.mark.skipif(not native_kernels.available(), reason=f"native kernels: {native_kernels.status()}")
ISAS = native_kernels.runnable_isas() or ("none",)  # the ISA builds in the library that this CPU runs


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Each ISA build this CPU runs in turn (EDGEINFER_CPU_ISA picks it, as a narrower CPU would)."""
    if not native_kernels.available():
        pytest.skip(f"native kernels: {native_kernels.status()}")
    monkeypatch.setenv("EDGEINFER_CPU_ISA", request.param)
    native_kernels._load.cache_clear()
    assert native_kernels.isa() == request.param, native_kernels.status()
    yield request.param
    monkeypatch.undo()
    native_kernels._load.cache_clear()


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def test_native_kernels_are_built() -> None:
    """The README's install builds them (a C compiler is there); a silent build failure must not pass."""
    if os.environ.get(native_kernels.DISABLE_ENV) == "0":
        pytest.skip("turned off in this environment")
    assert native_kernels.available(), native_kernels.status()


# (C, H, W, kernel (kh, kw), strides, dilations, pads (top, left, bottom, right))
DEPTHWISE = [
    (32, 9, 11, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),  # MobileNet's: the register-blocked 3x3 path
    (48, 8, 10, (3, 3), (2, 2), (1, 1), (0, 0, 1, 1)),  # TensorFlow's SAME at stride 2
    (16, 7, 7, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    (24, 9, 9, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),  # 16 + a tail of 8 channels: the generic path
    (8, 6, 13, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),  # fewer than 16 channels
    (16, 10, 9, (5, 3), (2, 1), (1, 1), (2, 1, 2, 1)),  # rectangular window, mixed strides
    (16, 9, 9, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2)),  # dilated
    (16, 6, 6, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0)),  # unpadded
    (16, 5, 7, (3, 3), (3, 3), (1, 1), (0, 2, 1, 0)),  # asymmetric padding, stride 3
    (16, 2, 2, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),  # image smaller than the window
    (16, 8, 8, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),  # a 1x1 depthwise (a per-channel scale)
    (33, 12, 12, (7, 7), (1, 1), (1, 1), (3, 3, 3, 3)),
]
ACTIVATIONS = [(None, None), ("relu", None), ("clip", [0.0, 6.0]), ("clip", [-0.5, 0.5]), ("hard_swish", None),
               ("silu", None), ("sigmoid", None), ("leaky_relu", [0.1]), ("hard_sigmoid", [0.3, 0.4]),
               ("tanh", None)]  # fmt: skip


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0] or "none")
@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
def test_native_depthwise_matches_the_nchw_reference(case: tuple, activation: tuple, isa: str) -> None:
    c, h, w, kernel, strides, dilations, pads = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((c, 1, *kernel), dtype=np.float32)
    bias = rng.standard_normal(c, dtype=np.float32)
    attrs = {"group": c, "strides": list(strides), "pads": list(pads), "dilations": list(dilations),
             "kernel_shape": list(kernel), "activation": activation[0], "activation_params": activation[1]}  # fmt: skip
    expected = OPS["Conv"].fn([x, weight, bias], attrs)[0]
    for xin in (channels_last(x), x):  # an NCHW input is copied to channels-last first
        got = conv([xin, weight, bias], attrs, NodeState(native=True))[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS[:3] + ACTIVATIONS[5:6], ids=lambda a: a[0] or "none")
def test_native_depthwise_with_a_residual_and_without_bias(activation: tuple, isa: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 8, 8), dtype=np.float32)  # two images
    weight = rng.standard_normal((32, 1, 3, 3), dtype=np.float32)
    attrs = {"group": 32, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3], "activation": activation[0],
             "activation_params": activation[1]}  # fmt: skip
    z = rng.standard_normal((2, 32, 8, 8), dtype=np.float32)
    expected = OPS["Conv"].fn([x, weight, None, z], attrs)[0]
    got = conv([channels_last(x), weight, None, channels_last(z)], attrs, NodeState(native=True))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [32, 20, 7])  # the widest build, a narrower one, scalar channels
def test_native_kernels_keep_nan_and_inf_as_numpy_does(channels: int, isa: str) -> None:
    x = np.ones((1, channels, 6, 6), np.float32)
    x[0, 3, 2, 2] = np.nan
    x[0, 5, 4, 4] = np.inf
    weight = np.full((channels, 1, 3, 3), 0.5, np.float32)
    bias = np.zeros(channels, np.float32)
    attrs = {"group": channels, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3], "activation": "clip",
             "activation_params": [0.0, 6.0]}  # fmt: skip
    expected = OPS["Conv"].fn([x, weight, bias], attrs)[0]
    got = conv([channels_last(x), weight, bias], attrs, NodeState(native=True))[0]
    assert np.isnan(expected).sum() == 9
    np.testing.assert_array_equal(got, expected)  # NaN where NumPy has NaN; inf clipped to 6


def native_epilogue(y2: np.ndarray, bias, z, activation: str | None, params) -> None:
    """The epilogue kernel itself, whatever size (fused_epilogue leaves small tails to NumPy), then tanh."""
    z2 = None if z is None else z.transpose(0, 2, 3, 1).reshape(y2.shape)
    kind = native_kernels.activation_kind(activation, params)
    native_kernels.epilogue(y2, bias, z2, kind or (0, -np.inf, np.inf))
    if kind is None:
        apply_activation(y2, activation, params, out=y2)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0] or "none")
@pytest.mark.parametrize("with_bias,with_z", [(True, False), (False, True), (True, True), (False, False)])
@pytest.mark.parametrize("span", [(8, 32), (0, 40), (0, 1), (4, 7)], ids=["range", "rows", "1ch", "tail"])
def test_native_epilogue_matches_numpy(activation: tuple, with_bias: bool, with_z: bool, span: tuple, isa: str) -> None:
    """Channels [a, b) of a (1, 7, 5, 40) NHWC block: a range of a wider block, whole contiguous rows (grouped
    pixels), a 1-channel head, 3 channels (scalar on every build)."""
    a, b = span
    rng = np.random.default_rng(3)
    whole = rng.standard_normal((1, 7, 5, 40), dtype=np.float32) * 8
    bias = rng.standard_normal(b - a, dtype=np.float32) if with_bias else None
    z = channels_last(rng.standard_normal((1, b - a, 7, 5), dtype=np.float32)) if with_z else None
    results = []
    for run in (lambda *args: fused_epilogue(*args, None, False), native_epilogue):
        y = whole.copy()
        run(y[..., a:b].reshape(35, b - a), bias, z, activation[0], activation[1])
        results.append(y)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(results[1][..., :a], whole[..., :a])  # nothing outside the range moves
    np.testing.assert_array_equal(results[1][..., b:], whole[..., b:])


@pytest.mark.parametrize("activation", ["sigmoid", "silu", "hard_swish"])
def test_native_activations_at_extreme_inputs(activation: str, isa: str) -> None:
    """The kernel's exp clamps its argument; results still meet NumPy's at the far ends (and keep NaN)."""
    values = np.array([-1e30, -1000, -100, -88.5, -87.5, -86.5, -20, -1e-3, 0, 1e-3, 20, 85.5, 86.5, 87.5, 88.5, 100,
                       1000, 1e30, np.nan], np.float32)  # fmt: skip
    y = np.tile(values, (3, 2))  # 38 channels: vectors and a tail; a 27-wide view below takes other builds
    results = []
    for run in (lambda *args: fused_epilogue(*args, None, False), native_epilogue):
        for width in (38, 27):
            out = y[:, :width].copy()
            run(out, None, None, activation, None)
            results.append(out)
    for pure, native in zip(results[:2], results[2:]):
        np.testing.assert_allclose(native, pure, rtol=1e-6, atol=1e-30)


def test_the_epilogue_policy_leaves_what_the_kernel_cannot_win_to_numpy() -> None:
    """One NumPy pass (a bias, a ReLU) the kernel cannot beat; few floats do not pay for its call."""
    declines = native_kernels.epilogue_declines
    assert declines(1 << 20, True, False, None) and declines(1 << 20, False, False, "relu")
    assert declines(676, True, False, None)  # YOLOX's 4-channel 13x13 head
    assert declines(1 << 20, True, False, "relu") is None and declines(1 << 20, True, True, None) is None
    assert declines(208 * 208 * 16, True, False, "silu") is None  # YOLOX's Focus conv
    assert declines(169, True, False, "sigmoid")  # its 1-channel 13x13 head
    y = np.random.default_rng(0).standard_normal((169, 1), dtype=np.float32)
    expected = y.copy()
    fused_epilogue(expected, np.ones(1, np.float32), None, "sigmoid", None, None, False)
    fused_epilogue(y, np.ones(1, np.float32), None, "sigmoid", None, None, True)  # (declined: the NumPy passes)
    np.testing.assert_array_equal(y, expected)


def test_native_kernels_turn_off_with_the_environment_variable() -> None:
    code = (
        "from edgeinfer.backends.numpy import native_kernels as n; from edgeinfer.backends import numpy as b;"
        "print(n.available(), n.status(), '|', b.list_devices()[0].name)"
    )
    env = {**os.environ, native_kernels.DISABLE_ENV: "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("False turned off (EDGEINFER_NATIVE=0)")
    assert "no native kernels: turned off" in out


def test_a_stale_build_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    if not native_kernels.available():
        pytest.skip(f"native kernels: {native_kernels.status()}")
    monkeypatch.setattr(native_kernels, "ABI", native_kernels.ABI + 1)
    native_kernels._load.cache_clear()
    try:
        assert not native_kernels.available()
        assert "stale build" in native_kernels.status() and "reinstall" in native_kernels.status()
    finally:
        monkeypatch.undo()
        native_kernels._load.cache_clear()
    assert native_kernels.available()


def test_the_pure_numpy_device_and_the_default_agree(tiny, tmp_path) -> None:
    import edgeinfer
    from edgeinfer.errors import DeviceError
    from edgeinfer.pack import write_pack

    pack = tmp_path / "tiny.pack"
    write_pack(tiny, pack)
    x = np.random.default_rng(0).standard_normal(edgeinfer.Session(pack, "cpu").inputs[0].shape).astype(np.float32)
    pure, default = edgeinfer.Session(pack, "cpu:numpy"), edgeinfer.Session(pack, "cpu")
    assert not pure._executable.native and default._executable.native == native_kernels.available()
    np.testing.assert_allclose(pure.run(x)["y"], default.run(x)["y"], rtol=1e-6, atol=1e-6)
    with pytest.raises(DeviceError, match="cpu:numpy"):
        edgeinfer.Session(pack, "cpu:fast")


# (C, H, W, kernel, strides, dilations, pads, ceil_mode)
MAX_POOLS = [
    (64, 13, 13, (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), 1),  # SqueezeNet's
    (16, 12, 12, (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), 0),
    (32, 9, 9, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), 0),  # YOLOX's SPP
    (20, 9, 9, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 0),  # a scalar channel tail
    (16, 10, 8, (3, 2), (1, 2), (2, 1), (2, 0, 1, 1), 1),  # dilated, mixed strides, asymmetric pads
    (24, 13, 13, (9, 9), (1, 1), (1, 1), (4, 4, 4, 4), 0),  # the separable form (24: a narrower build on AVX-512)
    (3, 13, 11, (13, 13), (1, 1), (1, 1), (6, 6, 6, 6), 0),  # scalar channels
    (16, 9, 9, (4, 4), (1, 1), (1, 1), (3, 3, 3, 3), 0),  # pads of the whole window less one: edge windows of 1 tap
]


@pytest.mark.parametrize("case", MAX_POOLS, ids=str)
def test_native_max_pool_matches_the_nchw_reference(case: tuple, isa: str) -> None:
    c, h, w, kernel, strides, dilations, pads, ceil_mode = case
    x = np.random.default_rng(4).standard_normal((2, c, h, w), dtype=np.float32)
    x[1, c // 2, 4, 4] = np.nan  # NaN wins its windows, as np.maximum lets it
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "dilations": list(dilations),
             "pads": list(pads), "ceil_mode": ceil_mode}  # fmt: skip
    expected = OPS["MaxPool"].fn([x], attrs)[0]
    got = max_pool([channels_last(x)], attrs, NodeState(native=True))[0]
    assert got.shape == expected.shape and np.isnan(expected).any()
    np.testing.assert_array_equal(got, expected)


SELFTEST = Path(__file__).resolve().parent.parent / "kernels" / "cpu" / "selftest.c"
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _build_selftest(directory: Path, compiler: str, flags: list[str]) -> Path:
    exe = directory / "selftest"
    subprocess.run([compiler, "-O3", "-Wno-psabi", *flags, str(SELFTEST), "-lm", "-o", str(exe)], check=True,
                   capture_output=True, text=True)  # fmt: skip
    return exe


def _run_selftest(exe: Path, runner: list[str]) -> str:
    out = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"all \d+ cases passed", out.stdout), out.stdout
    return out.stdout.strip().splitlines()[-1]


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    return cc


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernels/cpu/selftest.c built as setup.py builds the library (every ISA build this compiler makes)."""
    return _build_selftest(tmp_path_factory.mktemp("selftest"), _cc(), [])


def test_c_selftest_on_this_cpu(selftest: Path) -> None:
    """kernels/cpu/selftest.c: every ISA build this CPU runs against plain C reference loops, and the argument
    checks, without Python in between."""
    last = _run_selftest(selftest, [])
    ran = last.split("builds run:")[1].split()
    assert set(ran) == set(native_kernels.runnable_isas() or ran), last


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_c_selftest_of_the_plain_build(tmp_path: Path) -> None:
    """A compiler's plain x86-64 build (SSE2, no ISA builds above it), what a compiler without target
    attributes makes."""
    exe = _build_selftest(tmp_path, _cc(), ["-DEDGEINFER_BASELINE_ONLY", "-march=x86-64"])
    assert _run_selftest(exe, []).endswith("run: sse")


@pytest.mark.skipif(not X86 or shutil.which("qemu-x86_64") is None, reason="needs x86-64 and qemu-x86_64")
@pytest.mark.parametrize("cpu,builds", [("EPYC-Rome", "sse avx2"), ("Nehalem", "sse")])
def test_c_selftest_on_cpus_without_avx512_under_qemu(selftest: Path, cpu: str, builds: str) -> None:
    """An AMD EPYC without AVX-512 (AVX2 only) and an SSE4.2 CPU, emulated: the library picks the builds those CPUs
    run and they pass (qemu's TCG has no AVX-512, so an AVX-512 instruction in the avx2 build would trap)."""
    assert _run_selftest(selftest, ["qemu-x86_64", "-cpu", cpu]).endswith(f"run: {builds}")


def test_c_selftest_on_aarch64_under_qemu(tmp_path: Path) -> None:
    """The NEON build (Raspberry Pi, Jetson): cross-compiled and run under qemu where those tools are installed
    (.ci/run installs gcc-aarch64-linux-gnu and qemu-user)."""
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cc is None or qemu is None or not Path("/usr/aarch64-linux-gnu").is_dir():
        pytest.skip("no aarch64 cross compiler and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)")
    exe = _build_selftest(tmp_path, cc, [])
    assert _run_selftest(exe, [qemu, "-L", "/usr/aarch64-linux-gnu"]).endswith("run: neon")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@needs_native
@pytest.mark.parametrize("isa_name", ISAS)
def test_the_cpu_isa_variable_picks_the_build(isa_name: str) -> None:
    out = _python("from edgeinfer.backends.numpy import native_kernels as n; print(n.isa(), '|', n.status())",
                  EDGEINFER_CPU_ISA=isa_name)  # fmt: skip
    assert out.stdout.startswith(f"{isa_name} |") and f"{isa_name} build" in out.stdout, out.stdout + out.stderr


@needs_native
def test_a_build_the_cpu_cannot_run_is_not_picked() -> None:
    """EDGEINFER_CPU_ISA naming more than the CPU runs falls back to the widest build it does run, and says so."""
    if "avx512" in ISAS or not X86:
        pytest.skip("this CPU runs every build")
    out = _python("from edgeinfer.backends.numpy import native_kernels as n; print(n.isa(), '|', n.status())",
                  EDGEINFER_CPU_ISA="avx512")  # fmt: skip
    assert out.stdout.startswith(f"{ISAS[-1]} |") and "asks for more than this CPU runs" in out.stdout


@needs_native
def test_another_build_of_the_kernels_can_be_loaded(tmp_path: Path) -> None:
    """EDGEINFER_NATIVE_LIB loads a library built apart (here the plain build), for measuring and testing it."""
    lib = tmp_path / "plain.so"
    flags = ["-DEDGEINFER_BASELINE_ONLY", "-march=x86-64"] if X86 else []
    subprocess.run([_cc(), "-O3", "-Wno-psabi", "-shared", "-fPIC", *flags, str(SELFTEST.with_name("conv_hwc.c")),
                    "-o", str(lib)], check=True, capture_output=True)  # fmt: skip
    code = (
        "import numpy as np; from edgeinfer.ops import OPS; from edgeinfer.backends.numpy import native_kernels as n;"
        "from edgeinfer.backends.numpy.kernels import NodeState, max_pool; print(n.status());"
        "x = np.random.default_rng(0).standard_normal((1, 13, 13, 24), dtype=np.float32).transpose(0, 3, 1, 2);"
        "a = {'kernel_shape': [5, 5], 'pads': [2, 2, 2, 2]};"
        "print(np.array_equal(max_pool([x], a, NodeState(native=True))[0], OPS['MaxPool'].fn([x], a)[0]))"
    )
    out = _python(code, **{native_kernels.LIBRARY_ENV: str(lib)})
    assert out.stdout.splitlines() == [f"loaded from {lib}, {'sse' if X86 else ISAS[0]} build", "True"], out.stderr
    out = _python("from edgeinfer.backends.numpy import native_kernels as n; print(n.status())",
                  **{native_kernels.LIBRARY_ENV: str(tmp_path / "missing.so")})  # fmt: skip
    assert out.stdout.startswith("cannot load"), out.stdout


# Geometries a forged pack could carry (issue 18): each must raise a ValueError naming the kernel and the field,
# never reach memory it does not own. (op, attribute changes, the field the message names)
FORGED = [
    ("Conv", {"dilations": [-1000, 1]}, "dilations[0] must be >= 1 (got -1000)"),
    ("Conv", {"dilations": [1, -1]}, "dilations[1] must be >= 1 (got -1)"),
    ("Conv", {"dilations": [0, 1]}, "dilations[0]"),
    ("MaxPool", {"dilations": [-1000, 1]}, "dilations[0] must be >= 1 (got -1000)"),
    ("MaxPool", {"dilations": [1, -7]}, "dilations[1]"),
    ("MaxPool", {"kernel_shape": [0, 3]}, "kernel_shape[0]"),
    ("Conv", {"pads": [-2, 1, 1, 1]}, "pads[0] (top) must be >= 0"),
    ("MaxPool", {"pads": [1, -5, 1, 1]}, "pads[1] (left) must be >= 0"),
]


@pytest.mark.parametrize("op,change,message", FORGED, ids=lambda v: str(v))
def test_a_forged_geometry_raises_a_value_error(op: str, change: dict, message: str, isa: str) -> None:
    x = channels_last(np.random.default_rng(5).standard_normal((1, 16, 9, 9), dtype=np.float32))
    if op == "Conv":
        inputs = [x, np.ones((16, 1, 3, 3), np.float32), np.zeros(16, np.float32)]
        attrs = {"group": 16, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    else:
        inputs, attrs = [x], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    with pytest.raises(ValueError, match=f"native {'depthwise' if op == 'Conv' else 'max_pool'} kernel: .*"
                       + re.escape(message)):  # fmt: skip
        KERNELS[op](inputs, {**attrs, **change}, NodeState(native=True))


@needs_native
def test_bad_buffers_and_geometry_raise_in_the_bindings() -> None:
    """The checks the bindings cannot skip: a window too big for its buffers, strides that overlap, a short output."""
    x, y = np.zeros((6, 6, 8), np.float32), np.zeros((6, 6, 8), np.float32)
    window = ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"max_pool kernel: output width must be >= 1.*\(got 9\)"):
        native_kernels.max_pool(x, np.zeros((6, 9, 8), np.float32), window)  # windows past the image
    with pytest.raises(ValueError, match=r"max_pool kernel: pads\[0\] \(top\).*\(got 3\)"):
        native_kernels.max_pool(x, y, ([3, 3], [1, 1], [1, 1], [3, 1, 1, 1]))  # pads the size of the window
    with pytest.raises(ValueError, match=r"depthwise kernel: the weight buffer is shorter"):
        native_kernels.depthwise(x, np.zeros((3, 3, 7), np.float32), None, y, window, (0, 0.0, 6.0))
    with pytest.raises(ValueError, match=r"depthwise kernel: the bias buffer is shorter"):
        native_kernels.depthwise(x, np.zeros((3, 3, 8), np.float32), np.zeros(4, np.float32), y, window, (0, 0, 6))
    with pytest.raises(ValueError, match=r"depthwise kernel: the activation kind"):
        native_kernels.depthwise(x, np.zeros((3, 3, 8), np.float32), None, y, window, (9, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"epilogue kernel: the residual buffer is shorter"):
        native_kernels.epilogue(np.zeros((4, 8), np.float32), None, np.zeros((3, 8), np.float32), (5, 0, 0))
    overlapping = np.lib.stride_tricks.as_strided(x, (6, 6, 8), (6 * 8 * 4, 4 * 4, 4))  # pixels 4 floats apart
    with pytest.raises(ValueError, match=r"max_pool kernel: input pixel stride must be >= channels \(got 4\)"):
        native_kernels.max_pool(overlapping, y, window)
    assert not native_kernels.fits(overlapping) and native_kernels.fits(x)


def test_forged_geometries_never_crash_the_process() -> None:
    """The forged cases above in a process of their own, so that a crash (the bug of issue 18) fails this test
    instead of ending the test run."""
    code = (
        "import numpy as np; from edgeinfer.backends.numpy.kernels import KERNELS, NodeState\n"
        "x = np.zeros((1, 9, 9, 16), np.float32).transpose(0, 3, 1, 2)\n"
        "w, b = np.ones((16, 1, 3, 3), np.float32), np.zeros(16, np.float32)\n"
        "for d in ([-1000, 1], [1, -1], [1, -(2**40)], [2**62, 1]):\n"
        "    conv = {'group': 16, 'kernel_shape': [3, 3]}\n"
        "    for op, inputs, attrs in (('Conv', [x, w, b], conv), ('MaxPool', [x], {'kernel_shape': [3, 3]})):\n"
        "        try:\n"
        "            KERNELS[op](inputs, {**attrs, 'pads': [1, 1, 1, 1], 'dilations': d}, NodeState(native=True))\n"
        "        except ValueError as e:\n"
        "            print(op, d, 'ValueError')\n"
        "        except Exception as e:\n"
        "            print(op, d, type(e).__name__)\n"
    )
    out = _python(code)
    assert out.returncode == 0, f"the process ended with {out.returncode}: {out.stderr[-2000:]}"
    lines = out.stdout.splitlines()
    assert len(lines) == 8 and lines[:4] == [
        "Conv [-1000, 1] ValueError",
        "MaxPool [-1000, 1] ValueError",
        "Conv [1, -1] ValueError",
        "MaxPool [1, -1] ValueError",
    ], out.stdout


@needs_native
def test_explain_says_where_a_kernel_is_declined_and_which_build_runs() -> None:
    """Windows wholly in the padding (ONNX allows them) run in NumPy; explain() says so and why."""
    from edgeinfer.backends.numpy import NumpyExecutable, list_devices
    from edgeinfer.ir import Graph, Node, TensorInfo

    tensors = {"x": TensorInfo("x", (1, 8, 6, 6), "float32"), "y": TensorInfo("y", (1, 8, 10, 10), "float32"),
               "p": TensorInfo("p", (1, 8, 5, 5), "float32")}  # fmt: skip
    w = np.ones((8, 1, 3, 3), np.float32)
    nodes = [Node("dw", "Conv", ["x", "w", ""], ["y"], {"group": 8, "kernel_shape": [3, 3], "pads": [3, 3, 3, 3]}),
             Node("pool", "MaxPool", ["y"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]})]  # fmt: skip
    graph = Graph(nodes=nodes, tensors=tensors, inputs=["x"], outputs=["p"], constants={"w": w})
    ex = NumpyExecutable(graph)
    rows = {r["name"]: r for r in ex.explain()}
    assert rows["dw"]["kernel"] == "numpy" and "wholly in the padding" in rows["dw"]["config"]["native_declined"]
    assert rows["dw"]["config"]["native_declined"].startswith(f"{native_kernels.isa()} build")
    assert rows["pool"]["kernel"] == "native"
    x = np.random.default_rng(0).standard_normal((1, 8, 6, 6), dtype=np.float32)
    np.testing.assert_allclose(ex.run({"x": x})["p"], NumpyExecutable(graph, native=False).run({"x": x})["p"])
    assert f"{native_kernels.isa()} build" in list_devices()[0].name
