"""The one table of activations: every Python place that needs an activation's code or property reads it here.

An activation is a unary function that the kernels apply in an epilogue. Two kinds:

- *fused* activations (``fused=True``) may sit on a Conv as ``activation``/``activation_params`` (the compiler's
  fusion pass absorbs their ONNX op; ``edgeinfer/ops/activations.py`` implements them in NumPy, the validator
  accepts them, the GPU kernels and, for most, the NumPy backend's native C kernels apply them);
- the others only run as the GPU element-wise kernel ``unary_chain`` (``planning/tensor.py``), which applies any
  activation code.

The constants the kernels are compiled with are not generated: ``tests/test_activations_table.py`` checks that
``kernels/opencl/common.cl``'s ``#define ACT_*`` (CUDA compiles the same text) and the native kernels'
``enum { ACT_* }`` in ``kernels/cpu/conv_hwc.c`` equal this table. Adding an activation: docs/architecture.md,
"Adding an activation".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Activation:
    name: str  # the fused-Conv ``activation`` attribute value
    code: int  # ACT_<NAME> in kernels/opencl/common.cl: the GPU kernels' ``act`` argument
    onnx_op: str | None  # the stand-alone ONNX op it computes (None: silu, a pattern of Sigmoid and Mul)
    # (ONNX attribute, default) of each parameter, in ``activation_params`` order; Clip's come from its inputs
    params: tuple[tuple[str, float], ...] = ()
    fused: bool = False
    # never decreases, so it commutes with max (the NumPy backend's pool-epilogue plan moves it past a MaxPool);
    # with ``slope_param`` only while its first parameter (a slope for negative inputs) is >= 0
    non_decreasing: bool = False
    slope_param: bool = False
    finite_at_zero: bool = True  # act(0) is finite (the blocked separable conv feeds padded lanes act(0))
    # the native C kernels' kind (enum ACT_* in conv_hwc.c, ``NATIVE_KINDS``) and its (a, b) where the activation
    # has no parameters or omits them; None: the native kernels do not implement it (NumPy runs that Conv tail)
    native_kind: str | None = None
    native_args: tuple[float, float] = (0.0, 0.0)
    numpy_passes: int = 1  # passes over the output that ops/activations.py makes (native_kernels.epilogue_declines)


_NO_LIMIT = (("min", -math.inf), ("max", math.inf))

TABLE: tuple[Activation, ...] = (
    Activation("relu", 1, "Relu", fused=True, non_decreasing=True, native_kind="CLAMP"),
    Activation("leaky_relu", 2, "LeakyRelu", (("alpha", 0.01),), fused=True, non_decreasing=True, slope_param=True,
               native_kind="LEAKY_RELU", native_args=(0.01, 0.0), numpy_passes=2),
    Activation("clip", 3, "Clip", _NO_LIMIT, fused=True, non_decreasing=True, native_kind="CLAMP"),
    Activation("sigmoid", 4, "Sigmoid", fused=True, non_decreasing=True, native_kind="SIGMOID", numpy_passes=4),
    Activation("hard_sigmoid", 5, "HardSigmoid", (("alpha", 0.2), ("beta", 0.5)), fused=True, non_decreasing=True,
               slope_param=True, native_kind="HARD_SIGMOID", native_args=(0.2, 0.5), numpy_passes=3),
    Activation("hard_swish", 6, "HardSwish", fused=True, native_kind="HARD_SWISH", native_args=(1 / 6, 0.5),
               numpy_passes=4),
    Activation("silu", 7, None, fused=True, native_kind="SILU", numpy_passes=4),
    Activation("tanh", 8, "Tanh", fused=True, non_decreasing=True),
    Activation("exp", 9, "Exp"),
    Activation("neg", 10, "Neg"),
    Activation("sqrt", 11, "Sqrt"),
    Activation("abs", 12, "Abs"),
    Activation("reciprocal", 13, "Reciprocal", finite_at_zero=False),
    Activation("floor", 14, "Floor"),
    Activation("ceil", 15, "Ceil"),
    Activation("elu", 16, "Elu", (("alpha", 1.0),)),
    Activation("softplus", 17, "Softplus"),
    Activation("log", 18, "Log", finite_at_zero=False),
)  # fmt: skip

BY_NAME: dict[str, Activation] = {a.name: a for a in TABLE}
NO_ACTIVATION_CODE = 0  # ACT_NONE
# name -> GPU kernel code, "none" included (the ``act`` argument of every kernel with an epilogue)
CODES: dict[str, int] = {"none": NO_ACTIVATION_CODE, **{a.name: a.code for a in TABLE}}
FUSED: tuple[str, ...] = tuple(a.name for a in TABLE if a.fused)  # what a Conv's ``activation`` may name
# ONNX op -> activation, for every op the GPU element-wise kernel runs as an activation
BY_ONNX_OP: dict[str, Activation] = {a.onnx_op: a for a in TABLE if a.onnx_op}
# The native kernels' kinds in the order of conv_hwc.c's enum (the index is the kind passed to C). CLAMP with
# bounds -inf, inf is no activation; ReLU and Clip are clamps too.
NATIVE_KINDS: tuple[str, ...] = ("CLAMP", "LEAKY_RELU", "HARD_SIGMOID", "HARD_SWISH", "SIGMOID", "SILU")


def param_defaults(name: str) -> tuple[float, ...]:
    """The default of each of ``name``'s parameters, in ``activation_params`` order."""
    return tuple(default for _, default in BY_NAME[name].params)


def is_non_decreasing(name: str | None, params: Sequence[float] | None) -> bool:
    """Whether the fused activation ``name`` with ``params`` never decreases (commutes with max)."""
    activation = BY_NAME.get(name or "")
    if activation is None or not activation.non_decreasing:
        return False
    if not activation.slope_param:
        return True
    return (float(params[0]) if params else activation.params[0][1]) >= 0
