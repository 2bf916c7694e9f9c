"""The NumPy backend's native C kernels (``kernels/cpu/conv_hwc.c``) against the pure NumPy paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.ops import OPS, native_kernels
from edgeinfer.ops.conv_channels_last import fused_epilogue

needs_native = pytest.mark.skipif(not native_kernels.available(), reason=f"native kernels: {native_kernels.status()}")


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


@needs_native
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0] or "none")
@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
def test_native_depthwise_matches_the_nchw_reference(case: tuple, activation: tuple) -> None:
    c, h, w, kernel, strides, dilations, pads = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((c, 1, *kernel), dtype=np.float32)
    bias = rng.standard_normal(c, dtype=np.float32)
    attrs = {"group": c, "strides": list(strides), "pads": list(pads), "dilations": list(dilations),
             "kernel_shape": list(kernel), "activation": activation[0], "activation_params": activation[1]}  # fmt: skip
    expected = OPS["Conv"].fn([x, weight, bias], attrs)[0]
    for xin in (channels_last(x), x):  # an NCHW input is copied to channels-last first
        got = OPS["Conv"].fn([xin, weight, bias], {**attrs, "channels_last": True, "native_kernels": True})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("activation", ACTIVATIONS[:3], ids=lambda a: a[0] or "none")
def test_native_depthwise_with_a_residual_and_without_bias(activation: tuple) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 8, 8), dtype=np.float32)  # two images
    weight = rng.standard_normal((32, 1, 3, 3), dtype=np.float32)
    attrs = {"group": 32, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3], "activation": activation[0],
             "activation_params": activation[1]}  # fmt: skip
    z = rng.standard_normal((2, 32, 8, 8), dtype=np.float32)
    expected = OPS["Conv"].fn([x, weight, None, z], attrs)[0]
    got = OPS["Conv"].fn([channels_last(x), weight, None, channels_last(z)],
                         {**attrs, "channels_last": True, "native_kernels": True})[0]  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("channels", [32, 20])  # the vector path and the scalar tail
def test_native_kernels_keep_nan_and_inf_as_numpy_does(channels: int) -> None:
    x = np.ones((1, channels, 6, 6), np.float32)
    x[0, 3, 2, 2] = np.nan
    x[0, 5, 4, 4] = np.inf
    weight = np.full((channels, 1, 3, 3), 0.5, np.float32)
    bias = np.zeros(channels, np.float32)
    attrs = {"group": channels, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3], "activation": "clip",
             "activation_params": [0.0, 6.0]}  # fmt: skip
    expected = OPS["Conv"].fn([x, weight, bias], attrs)[0]
    got = OPS["Conv"].fn([channels_last(x), weight, bias], {**attrs, "channels_last": True, "native_kernels": True})[0]
    assert np.isnan(expected).sum() == 9
    np.testing.assert_array_equal(got, expected)  # NaN where NumPy has NaN; inf clipped to 6


@needs_native
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0] or "none")
@pytest.mark.parametrize("with_bias,with_z", [(True, False), (False, True), (True, True), (False, False)])
def test_native_epilogue_matches_numpy(activation: tuple, with_bias: bool, with_z: bool) -> None:
    rng = np.random.default_rng(3)
    whole = rng.standard_normal((1, 7, 5, 40), dtype=np.float32)  # NHWC; the epilogue runs on channels 8..32
    bias = rng.standard_normal(24, dtype=np.float32) if with_bias else None
    z = channels_last(rng.standard_normal((1, 24, 7, 5), dtype=np.float32)) if with_z else None
    results = []
    for native in (False, True):
        y = whole.copy()
        y2 = y[..., 8:32].reshape(35, 24)
        fused_epilogue(y2, bias, z, activation[0], activation[1], None, native)
        results.append(y)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(results[1][..., :8], whole[..., :8])  # nothing outside the range moves
    np.testing.assert_array_equal(results[1][..., 32:], whole[..., 32:])


@needs_native
@pytest.mark.parametrize("activation", ["sigmoid", "silu", "hard_swish"])
def test_native_activations_at_extreme_inputs(activation: str) -> None:
    """The kernel's exp clamps its argument; results still meet NumPy's at the far ends (and keep NaN)."""
    values = np.array([-1e30, -1000, -100, -88.5, -87.5, -20, -1e-3, 0, 1e-3, 20, 87.5, 88.5, 100, 1000, 1e30,
                       np.nan], np.float32)  # fmt: skip
    y = np.tile(values, (3, 2))  # 32 channels: the vector loop; a 48-wide view below takes the scalar tail
    results = []
    for native in (False, True):
        for width in (32, 27):
            out = y[:, :width].copy()
            fused_epilogue(out, None, None, activation, None, None, native)
            results.append(out)
    for pure, native in zip(results[:2], results[2:]):
        np.testing.assert_allclose(native, pure, rtol=1e-6, atol=1e-30)


def test_native_kernels_turn_off_with_the_environment_variable() -> None:
    code = (
        "from edgeinfer.ops import native_kernels as n; from edgeinfer.backends import numpy_backend as b;"
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
]


@needs_native
@pytest.mark.parametrize("case", MAX_POOLS, ids=str)
def test_native_max_pool_matches_the_nchw_reference(case: tuple) -> None:
    c, h, w, kernel, strides, dilations, pads, ceil_mode = case
    x = np.random.default_rng(4).standard_normal((2, c, h, w), dtype=np.float32)
    x[1, 3, 4, 4] = np.nan  # NaN wins its windows, as np.maximum lets it
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "dilations": list(dilations),
             "pads": list(pads), "ceil_mode": ceil_mode}  # fmt: skip
    expected = OPS["MaxPool"].fn([x], attrs)[0]
    got = OPS["MaxPool"].fn([channels_last(x)], {**attrs, "native_kernels": True})[0]
    assert got.shape == expected.shape and np.isnan(expected).any()
    np.testing.assert_array_equal(got, expected)


SELFTEST = Path(__file__).resolve().parent.parent / "kernels" / "cpu" / "selftest.c"


def _run_selftest(tmp_path: Path, compiler: str, flags: list[str], runner: list[str]) -> str:
    exe = tmp_path / "selftest"
    subprocess.run([compiler, "-O3", "-Wno-psabi", *flags, str(SELFTEST), "-lm", "-o", str(exe)], check=True,
                   capture_output=True, text=True)  # fmt: skip
    out = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.parametrize("flags", [[], ["-DHAS_AVX512=0"]], ids=["as-built", "8-wide-paths"])
def test_c_selftest_on_this_cpu(tmp_path: Path, flags: list[str]) -> None:
    """kernels/cpu/selftest.c: the kernels against plain C reference loops, without Python in between."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    assert "all 21 cases passed" in _run_selftest(tmp_path, cc, flags, [])


def test_c_selftest_on_aarch64_under_qemu(tmp_path: Path) -> None:
    """The NEON build (Raspberry Pi, Jetson): cross-compiled and run under qemu where those tools are installed
    (.ci/run installs gcc-aarch64-linux-gnu and qemu-user)."""
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cc is None or qemu is None or not Path("/usr/aarch64-linux-gnu").is_dir():
        pytest.skip("no aarch64 cross compiler and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)")
    assert "all 21 cases passed" in _run_selftest(tmp_path, cc, [], [qemu, "-L", "/usr/aarch64-linux-gnu"])
