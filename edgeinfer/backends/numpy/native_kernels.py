"""The NumPy backend's native kernels: ``kernels/cpu/conv_hwc.c``, built as ``edgeinfer._cpu_kernels``.

NumPy runs a depthwise conv as one pass per kernel tap and each bias, residual and activation as one
or more passes over the output (SiLU takes four); the C kernels fuse them (depthwise taps + bias + any
fused activation but tanh, and a conv's epilogue: bias + residual + activation) and are 3-5x faster per
layer. They are optional: the extension builds where a C compiler is found at install time and is loaded
with ctypes (no Python or NumPy headers, nothing but NumPy at run time). Without it, or with
``EDGEINFER_NATIVE=0`` in the environment, the NumPy backend runs the pure NumPy paths, which remain the
reference the tests hold the kernels to.

One library holds a build of the kernels per instruction set (x86-64: ``avx512``, ``avx2`` and the SSE2
baseline ``sse``; elsewhere the compiler's baseline, ``neon`` on aarch64). The widest one that the CPU runs
and that :func:`edgeinfer.cpu_isa.host_isa` allows is used, so ``EDGEINFER_CPU_ISA=avx2`` (or ``sse``) runs
and measures a narrower class on a wider CPU. ``EDGEINFER_NATIVE_LIB=/path/to/lib.so`` loads another build
of ``conv_hwc.c`` instead of the installed one (a test's or a benchmark's).

Every kernel checks its arguments (geometry, buffer lengths) and returns an error code, raised here as a
``ValueError`` naming the kernel and the field: a forged model must not crash the process in C.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.activations import BY_NAME, NATIVE_KINDS
from edgeinfer.cpu_isa import ISA_ENV, host_isa
from edgeinfer.ops.conv import window_attrs

MODULE = "edgeinfer._cpu_kernels"
ABI = 5  # EDGEINFER_CPU_KERNELS_ABI in conv_hwc.c
DISABLE_ENV = "EDGEINFER_NATIVE"  # "0" turns the native kernels off
LIBRARY_ENV = "EDGEINFER_NATIVE_LIB"  # a built conv_hwc.c library to load instead of the installed one

# ISA builds by width, for matching the host's class (cpu_isa names): a class runs builds up to its rank
_RANK = {"sse": 0, "neon": 0, "generic": 0, "avx": 0, "avx2": 1, "avx512": 2}

_ptr, _i64, _i32, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float
Window = tuple[list[int], list[int], list[int], list[int]]


@dataclass(frozen=True)
class Kernels:
    """The loaded library and the ISA build its calls use (``isa``, an index into ``builds``)."""

    lib: ctypes.CDLL
    path: str
    isa: int
    builds: tuple[str, ...]  # every ISA build in the library, narrowest first
    runnable: tuple[str, ...]  # those this CPU runs

    @property
    def isa_name(self) -> str:
        return self.builds[self.isa]

    @property
    def lanes(self) -> int:
        return int(self.lib.edgeinfer_cpu_kernels_isa_lanes(self.isa))


def _library_path() -> tuple[str | None, str]:
    path = os.environ.get(LIBRARY_ENV)
    if path:
        return path, ""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.origin:
        return None, f"not built ({MODULE} is missing: install edgeinfer where a C compiler is found)"
    return spec.origin, ""


def _bind(lib: ctypes.CDLL) -> None:
    lib.edgeinfer_cpu_kernels_isa_name.restype = ctypes.c_char_p
    lib.edgeinfer_cpu_kernels_error.restype = ctypes.c_char_p
    lib.edgeinfer_depthwise_hwc.argtypes = [_i32, _ptr, _i64, _ptr, _i64, _ptr, _i64, _ptr, _i64, _ptr, _i64,
                                            _i32, _f32, _f32]  # fmt: skip
    lib.edgeinfer_max_pool_hwc.argtypes = [_i32, _ptr, _i64, _ptr, _i64, _ptr, _i64]
    lib.edgeinfer_epilogue_hwc.argtypes = [_i32, _ptr, _i64, _i64, _i64, _i64, _ptr, _i64, _ptr, _i64, _i64, _i32,
                                           _f32, _f32]  # fmt: skip
    lib.edgeinfer_im2col.argtypes = [_i32, _ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _i64, _i32, _i32]
    for fn in (
        lib.edgeinfer_depthwise_hwc,
        lib.edgeinfer_max_pool_hwc,
        lib.edgeinfer_epilogue_hwc,
        lib.edgeinfer_im2col,
    ):
        fn.restype = ctypes.c_int


@functools.cache
def _load() -> tuple[Kernels | None, str]:
    """The loaded kernels, or ``None``, with where they came from or why not."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, f"turned off ({DISABLE_ENV}=0)"
    path, why = _library_path()
    if path is None:
        return None, why
    try:
        lib = ctypes.CDLL(path)
        abi = lib.edgeinfer_cpu_kernels_abi()
    except (OSError, AttributeError) as e:
        return None, f"cannot load {path}: {e}"
    if abi != ABI:
        return None, f"stale build {path} (ABI {abi}, this edgeinfer needs {ABI}): reinstall edgeinfer"
    _bind(lib)
    builds = tuple(lib.edgeinfer_cpu_kernels_isa_name(i).decode() for i in range(lib.edgeinfer_cpu_kernels_isa_count()))
    runnable = tuple(name for i, name in enumerate(builds) if lib.edgeinfer_cpu_kernels_isa_runs(i))
    wanted = host_isa().name
    allowed = [i for i, name in enumerate(builds) if name in runnable and _RANK.get(name, 0) <= _RANK.get(wanted, 0)]
    isa = allowed[-1] if allowed else 0  # (the baseline always runs)
    note = ""
    if os.environ.get(ISA_ENV) and _RANK.get(builds[isa], 0) < _RANK.get(wanted, 0):
        note = f"; {ISA_ENV}={wanted} asks for more than this CPU runs"
    return Kernels(lib, path, isa, builds, runnable), f"loaded from {path}, {builds[isa]} build{note}"


def available() -> bool:
    """Whether the native kernels can run here."""
    return _load()[0] is not None


def status() -> str:
    """Where the kernels were loaded from and which ISA build runs, or why they are not used
    (for ``edgeinfer devices``)."""
    return _load()[1]


def isa() -> str | None:
    """The ISA build the kernels run (``avx512``, ``avx2``, ``sse``, ``neon``, ``generic``), or ``None``."""
    kernels = _load()[0]
    return None if kernels is None else kernels.isa_name


def runnable_isas() -> tuple[str, ...]:
    """The ISA builds in the library that this CPU runs, narrowest first (what ``EDGEINFER_CPU_ISA`` can pick)."""
    kernels = _load()[0]
    return () if kernels is None else kernels.runnable


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


def activation_kind(activation: str | None, params: Sequence[float] | None) -> tuple[int, float, float] | None:
    """``(kind, a, b)`` of the kernels for a fused activation, or ``None`` where they have none (tanh): the kind is
    its index in ``NATIVE_KINDS`` (enum ACT_* in conv_hwc.c); a clamp (no activation, ReLU, Clip) takes its bounds."""
    bounds = clamp_bounds(activation, params)
    if bounds is not None:
        return (NATIVE_KINDS.index("CLAMP"), *bounds)
    entry = BY_NAME.get(activation or "")
    if entry is None or entry.native_kind is None:
        return None
    a, b = entry.native_args
    if entry.params and params:
        a = float(params[0])
        b = float(params[1]) if len(params) > 1 else b
    return NATIVE_KINDS.index(entry.native_kind), a, b


def fits(*arrays: np.ndarray | None) -> bool:
    """Whether the kernels take these arrays: float32, channels (the last axis) contiguous, aligned, and each
    outer axis stepping over at least the whole of the axes after it (no overlap, no broadcast)."""
    for a in arrays:
        if a is None:
            continue
        strides, shape = a.strides, a.shape
        if a.dtype != np.float32 or strides[-1] != 4:
            return False
        inner = shape[-1] * 4
        for i in range(a.ndim - 2, -1, -1):
            s = strides[i]
            if s < 0 or s % 4 or (shape[i] > 1 and s < inner):
                return False
            inner = max(inner, s * shape[i])
    return True


def _extent(a: np.ndarray) -> int:
    """Floats from ``a``'s first element to just past its last (what the kernels may touch)."""
    if a.size == 0:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(a.shape, a.strides)) // 4


def _raise(kernel: str, lib: ctypes.CDLL, code: int, geometry: np.ndarray | None = None) -> None:
    rule = lib.edgeinfer_cpu_kernels_error(code).decode()
    if geometry is not None and 1 <= code <= len(geometry):
        rule += f" (got {int(geometry[code - 1])})"
    raise ValueError(f"native {kernel} kernel: {rule}")


def window_overlaps_image(in_hw: Sequence[int], out_hw: Sequence[int], window: Window) -> bool:
    """Whether every output window overlaps the image (pads less than the window, the last window starting
    inside): the geometries the kernels take. ONNX allows more (windows wholly in padding); NumPy runs those.
    Geometries with a size, stride or dilation below 1 count as overlapping, so the kernel rejects them."""
    kernel, strides, dilations, pads = window
    for axis in range(2):
        k, s, d, size, out = kernel[axis], strides[axis], dilations[axis], in_hw[axis], out_hw[axis]
        if min(k, s, d, size, out) < 1:
            return True  # invalid: the kernel raises a ValueError naming the field
        if pads[axis] > (k - 1) * d or (out - 1) * s - pads[axis] >= size:
            return False
    return True


# floats that the passes the native epilogue saves must cover to pay for its call (~10 us through ctypes against
# ~3 us a NumPy pass): measured on the 2-core Xeon for every ISA build (benchmarks/native_kernels.py)
EPILOGUE_MIN_SAVED = 32768


def epilogue_declines(size: int, bias: bool, residual: bool, activation: str | None) -> str | None:
    """Why NumPy runs a Conv's tail (bias, residual, activation over ``size`` floats) rather than the native
    epilogue kernel, or ``None`` where the kernel runs it: it must save NumPy passes over enough floats. One pass
    (a bias alone, a ReLU alone) it cannot beat: NumPy's tiled bias add is that pass already."""
    # passes over the output that NumPy's fused_epilogue makes for the activation (edgeinfer.ops.activations)
    activation_passes = BY_NAME[activation].numpy_passes if activation in BY_NAME else int(bool(activation))
    passes = bias + residual + activation_passes
    if passes == 0:
        return "nothing to do"
    if passes == 1:
        return "one NumPy pass: the native epilogue saves nothing"
    if size * (passes - 1) < EPILOGUE_MIN_SAVED:
        return f"{size} floats: the {passes - 1} NumPy passes it saves cost less than its call"
    return None


def runs_epilogue(size: int, bias: bool, residual: bool, activation: str | None) -> bool:
    """Whether the native epilogue kernel runs this Conv tail (:func:`epilogue_declines`)."""
    return epilogue_declines(size, bias, residual, activation) is None


def declines(kind: str, in_hw: Sequence[int], out_hw: Sequence[int], window: Window) -> str | None:
    """Why the NumPy backend runs this ``depthwise``, ``max_pool`` or ``im2col`` layer with NumPy rather than the native
    kernel here, or ``None`` where the kernel runs it (what the backend's kernels decide and ``explain()`` reports)."""
    if not window_overlaps_image(in_hw, out_hw, window):
        return "windows lie wholly in the padding: the kernel does not take them, NumPy does"
    return None


def declines_node(node: Any, graph: Any) -> str | None:
    """Why the NumPy backend runs this node without its native kernel (:func:`declines` for a MaxPool, a
    depthwise Conv or a group-1 Conv's im2col, :func:`epilogue_declines` for a 1x1 Conv's tail), or ``None``
    where the kernel runs or the node has none. ``node`` carries the attributes the backend runs it with (an
    executor plan may have moved its activation)."""
    x, y = graph.tensors.get(node.inputs[0]), graph.tensors.get(node.outputs[0])
    if x is None or y is None or len(x.shape) != 4 or len(y.shape) != 4:
        return None
    if node.op == "MaxPool":
        return declines("max_pool", x.shape[2:], y.shape[2:], window_attrs(node.attrs, x.shape[2:]))
    w = graph.constants.get(node.inputs[1]) if node.op == "Conv" else None
    if w is None:
        return None
    if int(node.attrs.get("group", 1)) == x.shape[1] == w.shape[0] > 1:
        return declines("depthwise", x.shape[2:], y.shape[2:], window_attrs(node.attrs, x.shape[2:], w.shape[2:]))
    if gathers_patches(node, graph):
        return declines("im2col", x.shape[2:], y.shape[2:], window_attrs(node.attrs, x.shape[2:], w.shape[2:]))
    bias = len(node.inputs) > 2 and bool(node.inputs[2])
    residual = len(node.inputs) > 3 and bool(node.inputs[3])
    if not (bias or residual or node.attrs.get("activation")):
        return None  # (no tail, nothing to decline)
    return epilogue_declines(math.prod(y.shape), bias, residual, node.attrs.get("activation"))


def gathers_patches(node: Any, graph: Any) -> bool:
    """Whether the NumPy backend runs this 2-D Conv as im2col + sgemm (group 1, not a plain 1x1): the patches
    are then gathered by :func:`im2col` (unless :func:`declines` says otherwise)."""
    x, w = graph.tensors.get(node.inputs[0]), graph.constants.get(node.inputs[1] if node.inputs[1:] else "")
    if node.op != "Conv" or x is None or w is None or len(x.shape) != 4 or int(node.attrs.get("group", 1)) != 1:
        return False
    kernel, strides, _, pads = window_attrs(node.attrs, x.shape[2:], w.shape[2:])
    return not (kernel == [1, 1] and strides == [1, 1] and not any(pads))


def _strides(a: np.ndarray) -> tuple[int, int]:
    """Row and pixel strides of an (H, W, C) block in floats; an axis of length 1 gets the stride it would have
    contiguously (NumPy may give it any, and it is never stepped)."""
    h, w, c = a.shape
    row, pixel = a.strides[0] // 4, a.strides[1] // 4
    pixel = pixel if w > 1 else max(pixel, c)
    return (row if h > 1 else max(row, w * pixel)), pixel


def _geometry(x: np.ndarray, y: np.ndarray, window: Window) -> np.ndarray:
    """The int64 geometry array of ``conv_hwc.c`` (enum G_*): image, strides, window, all output rows."""
    kernel, strides, dilations, pads = window
    h, w, c = x.shape
    ho, wo, _ = y.shape
    xr, xp = _strides(x)
    yr, yp = _strides(y)
    return np.array([h, w, c, xr, xp, *kernel, *strides, *dilations, pads[0], pads[1], wo, yr, yp, 0, ho], np.int64)


def max_pool(x: np.ndarray, y: np.ndarray, window: Window, cache: dict | None = None) -> None:
    """``y (Ho, Wo, C)`` = 2-D max pool of ``x (H, W, C)``; padding never wins; NaN propagates as in NumPy.
    ``cache`` (a node's) keeps the geometry between calls."""
    k = _load()[0]
    key = ("native_max_pool_call", x.shape, x.strides, y.shape, y.strides)
    call = None if cache is None else cache.get(key)
    if call is None:
        g = _geometry(x, y, window)
        call = (g, g.ctypes.data, _extent(x), _extent(y))
        if cache is not None:
            cache[key] = call
    g, g_ptr, x_len, y_len = call
    code = k.lib.edgeinfer_max_pool_hwc(k.isa, x.ctypes.data, x_len, y.ctypes.data, y_len, g_ptr, len(g))
    if code:
        _raise("max_pool", k.lib, code, g)


def depthwise(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    y: np.ndarray,
    window: Window,
    activation: tuple[int, float, float],
    cache: dict | None = None,
) -> None:
    """``y (Ho, Wo, C) = act(depthwise(x (H, W, C)) + bias)``, zero padding, in one pass; ``activation`` from
    :func:`activation_kind`.

    ``weights`` is (kh, kw, C) C-contiguous; ``x`` and ``y`` need contiguous channels (:func:`fits`). ``cache``
    (a node's, which also holds ``weights`` and ``bias``) keeps the geometry and constant pointers between calls.
    """
    k = _load()[0]
    key = ("native_depthwise_call", x.shape, x.strides, y.shape, y.strides)
    call = None if cache is None else cache.get(key)
    if call is None or call[0] is not weights or call[1] is not bias:  # (the call holds the arrays it points to)
        g = _geometry(x, y, window)
        call = (weights, bias, g, g.ctypes.data, _extent(x), _extent(y), weights.ctypes.data, weights.size,
                None if bias is None else bias.ctypes.data, 0 if bias is None else bias.size)  # fmt: skip
        if cache is not None:
            cache[key] = call
    _, _, g, g_ptr, x_len, y_len, w_ptr, w_len, b_ptr, b_len = call
    code = k.lib.edgeinfer_depthwise_hwc(k.isa, x.ctypes.data, x_len, w_ptr, w_len, b_ptr, b_len, y.ctypes.data, y_len,
                                         g_ptr, len(g), *activation)  # fmt: skip
    if code:
        _raise("depthwise", k.lib, code, g)


def epilogue(
    y2: np.ndarray,
    bias: np.ndarray | None,
    z2: np.ndarray | None,
    activation: tuple[int, float, float],
    cache: dict | None = None,
) -> None:
    """``y2 (P, M) = act(y2 + bias + z2)`` in place, one pass; ``activation`` from :func:`activation_kind`;
    ``bias`` and ``z2`` may be ``None``; ``cache`` (a node's, holding ``bias``) keeps the sizes between calls."""
    k = _load()[0]
    key = ("native_epilogue_call", y2.shape, y2.strides, None if z2 is None else z2.strides)
    call = None if cache is None else cache.get(key)
    if call is None or call[0] is not bias:  # (the call holds the bias it points to)
        p, m = y2.shape
        y_row = y2.strides[0] // 4 if p > 1 else m  # (a single row is never stepped: NumPy may give it any stride)
        z_row = 0 if z2 is None else z2.strides[0] // 4 if p > 1 else m
        call = (bias, _extent(y2), p, m, y_row, None if bias is None else bias.ctypes.data,
                0 if bias is None else bias.size, 0 if z2 is None else _extent(z2), z_row)  # fmt: skip
        if cache is not None:
            cache[key] = call
    _, y_len, p, m, y_row, b_ptr, b_len, z_len, z_row = call
    z_ptr = None if z2 is None else z2.ctypes.data
    code = k.lib.edgeinfer_epilogue_hwc(k.isa, y2.ctypes.data, y_len, p, m, y_row, b_ptr, b_len, z_ptr, z_len, z_row,
                                        *activation)  # fmt: skip
    if code:
        _raise("epilogue", k.lib, code)


def im2col(
    x: np.ndarray,
    cols: np.ndarray,
    window: Window,
    first_row: int,
    channel_major: bool,
    ones: bool,
    cache: dict | None = None,
) -> None:
    """The patches of output rows ``first_row`` on of a group-1 conv of ``x (H, W, C)``, zero where they cross the
    padding, into ``cols (rows, Wo, K [+ 1])``: ``K = kh * kw * C`` columns in (kernel row, kernel column, channel)
    order, or (channel, kernel row, kernel column) where ``channel_major``, and a last column of ones where ``ones``.

    Any non-negative strides (in whole floats) on both sides: ``x`` may be an NCHW image's (H, W, C) view, and
    ``cols`` a pixel-major sgemm operand or the transposed view of a tap-major one. ``cache`` (a node's) keeps the
    geometry between calls.
    """
    k = _load()[0]
    key = ("native_im2col_call", x.shape, x.strides, cols.shape, cols.strides, first_row, channel_major, ones)
    call = None if cache is None else cache.get(key)
    if call is None:
        kernel, strides, dilations, pads = window
        h, w, c = x.shape
        rows, wo, _ = cols.shape
        xr, xp, xc = (s // 4 for s in x.strides)
        yr, yp, yt = (s // 4 for s in cols.strides)
        g = np.array([h, w, c, xr, xp, *kernel, *strides, *dilations, pads[0], pads[1], wo, yr, yp, first_row,
                      first_row + rows], np.int64)  # fmt: skip
        call = (g, g.ctypes.data, _extent(x), xc, _extent(cols), yt)
        if cache is not None:
            cache[key] = call
    g, g_ptr, x_len, xc, cols_len, yt = call
    code = k.lib.edgeinfer_im2col(k.isa, x.ctypes.data, x_len, xc, cols.ctypes.data, cols_len, yt, g_ptr, len(g),
                                  int(channel_major), int(ones))  # fmt: skip
    if code:
        _raise("im2col", k.lib, code, g)


def im2col_fits(*arrays: np.ndarray) -> bool:
    """Whether :func:`im2col` takes these arrays as they are: float32 with non-negative strides of whole floats."""
    return all(a.dtype == np.float32 and all(s >= 0 and s % 4 == 0 for s in a.strides) for a in arrays)
