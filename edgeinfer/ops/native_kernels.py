"""The NumPy backend's native kernels: ``kernels/cpu/conv_hwc.c``, built as ``edgeinfer._cpu_kernels``.

NumPy runs a depthwise conv as one pass per kernel tap and each bias, residual and activation as one
or more passes over the output (SiLU takes four); the C kernels fuse them (depthwise taps + bias + clamp,
and a conv's epilogue: bias + residual + any fused activation but tanh) and are 3-5x faster per layer.
They are optional: the extension builds where a C compiler is found at install time and is loaded with
ctypes (no Python or NumPy headers, nothing but NumPy at run time). Without it, or with
``EDGEINFER_NATIVE=0`` in the environment, the NumPy backend runs the pure NumPy paths, which remain the
reference the tests hold the kernels to.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
import os
from collections.abc import Sequence

import numpy as np

MODULE = "edgeinfer._cpu_kernels"
ABI = 3  # EDGEINFER_CPU_KERNELS_ABI in conv_hwc.c
DISABLE_ENV = "EDGEINFER_NATIVE"  # "0" turns the native kernels off

_ptr, _i64, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """The loaded library, or ``None`` with the reason."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, f"turned off ({DISABLE_ENV}=0)"
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.origin:
        return None, f"not built ({MODULE} is missing: install edgeinfer where a C compiler is found)"
    try:
        lib = ctypes.CDLL(spec.origin)
        abi = lib.edgeinfer_cpu_kernels_abi()
    except (OSError, AttributeError) as e:
        return None, f"cannot load {spec.origin}: {e}"
    if abi != ABI:
        return None, f"stale build {spec.origin} (ABI {abi}, this edgeinfer needs {ABI}): reinstall edgeinfer"
    lib.edgeinfer_depthwise_hwc.argtypes = [_ptr, _ptr, _ptr, _ptr, _ptr, _f32, _f32]
    lib.edgeinfer_depthwise_hwc.restype = None
    lib.edgeinfer_epilogue_hwc.argtypes = [_ptr, _i64, _i64, _i64, _ptr, _ptr, _i64, ctypes.c_int32, _f32, _f32]
    lib.edgeinfer_epilogue_hwc.restype = None
    lib.edgeinfer_max_pool_hwc.argtypes = [_ptr, _ptr, _ptr]
    lib.edgeinfer_max_pool_hwc.restype = None
    return lib, f"loaded from {spec.origin}"


def available() -> bool:
    """Whether the native kernels can run here."""
    return _load()[0] is not None


def status() -> str:
    """Where the kernels were loaded from, or why they are not used (for ``edgeinfer devices``)."""
    return _load()[1]


def clamp_bounds(activation: str | None, params: Sequence[float] | None) -> tuple[float, float] | None:
    """``(lo, hi)`` where the fused activation is a clamp (none, ReLU, Clip), else ``None``."""
    if not activation:
        return -math.inf, math.inf
    if activation == "relu":
        return 0.0, math.inf
    if activation == "clip":
        lo = float(params[0]) if params is not None and len(params) > 0 else -math.inf
        hi = float(params[1]) if params is not None and len(params) > 1 else math.inf
        return lo, hi
    return None


# the activation kinds of edgeinfer_epilogue_hwc (enum ACT_* in conv_hwc.c), with their parameter defaults
# (kind 0, the clamp, covers no activation, ReLU and Clip: clamp_bounds gives its limits)
ACTIVATION_KINDS = {"leaky_relu": (1, 0.01, 0.0), "hard_sigmoid": (2, 0.2, 0.5), "hard_swish": (3, 1 / 6, 0.5),
                    "sigmoid": (4, 0.0, 0.0), "silu": (5, 0.0, 0.0)}  # fmt: skip


def activation_kind(activation: str | None, params: Sequence[float] | None) -> tuple[int, float, float] | None:
    """``(kind, a, b)`` of the epilogue kernel for a fused activation, or ``None`` where it has none (tanh)."""
    bounds = clamp_bounds(activation, params)
    if bounds is not None:
        return (0, *bounds)
    if activation not in ACTIVATION_KINDS:
        return None
    kind, a, b = ACTIVATION_KINDS[activation]
    if activation in ("leaky_relu", "hard_sigmoid") and params:
        a = float(params[0])
        b = float(params[1]) if len(params) > 1 else b
    return kind, a, b


def _floats(strides: tuple[int, ...]) -> list[int]:
    return [s // 4 for s in strides]


def fits(*arrays: np.ndarray | None) -> bool:
    """Whether the kernels take these arrays: float32, channels (the last axis) contiguous, aligned."""
    for a in arrays:
        if a is None:
            continue
        if a.dtype != np.float32 or a.strides[-1] != 4 or any(s < 0 or s % 4 for s in a.strides):
            return False
    return True


def _geometry(x: np.ndarray, y: np.ndarray, window: tuple[list[int], list[int], list[int], list[int]]) -> np.ndarray:
    """The int64 geometry array of ``conv_hwc.c`` (enum G_*): image, strides, window, all output rows."""
    kernel, strides, dilations, pads = window
    h, w, c = x.shape
    ho, wo, _ = y.shape
    xr, xp, _ = _floats(x.strides)
    yr, yp, _ = _floats(y.strides)
    return np.array([h, w, c, xr, xp, *kernel, *strides, *dilations, pads[0], pads[1], wo, yr, yp, 0, ho], np.int64)


def max_pool(x: np.ndarray, y: np.ndarray, window: tuple[list[int], list[int], list[int], list[int]]) -> None:
    """``y (Ho, Wo, C)`` = 2-D max pool of ``x (H, W, C)``; padding never wins; NaN propagates as in NumPy."""
    lib = _load()[0]
    lib.edgeinfer_max_pool_hwc(x.ctypes.data, y.ctypes.data, _geometry(x, y, window).ctypes.data)


def depthwise(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    y: np.ndarray,
    window: tuple[list[int], list[int], list[int], list[int]],
    bounds: tuple[float, float],
) -> None:
    """``y (Ho, Wo, C) = clamp(depthwise(x (H, W, C)) + bias, *bounds)``, zero padding, in one pass.

    ``weights`` is (kh, kw, C) C-contiguous; ``x`` and ``y`` need contiguous channels (:func:`fits`).
    """
    lib = _load()[0]
    geometry = _geometry(x, y, window)
    lib.edgeinfer_depthwise_hwc(
        x.ctypes.data, weights.ctypes.data, None if bias is None else bias.ctypes.data, y.ctypes.data,
        geometry.ctypes.data, *bounds,
    )  # fmt: skip


def epilogue(
    y2: np.ndarray, bias: np.ndarray | None, z2: np.ndarray | None, activation: tuple[int, float, float]
) -> None:
    """``y2 (P, M) = act(y2 + bias + z2)`` in place, one pass; ``activation`` from :func:`activation_kind`;
    ``bias`` and ``z2`` may be ``None``."""
    lib = _load()[0]
    p, m = y2.shape
    lib.edgeinfer_epilogue_hwc(
        y2.ctypes.data, p, m, y2.strides[0] // 4, None if bias is None else bias.ctypes.data,
        None if z2 is None else z2.ctypes.data, 0 if z2 is None else z2.strides[0] // 4, *activation,
    )  # fmt: skip
