"""edgeinfer/activations.py is the one table of activations: the kernels' constants and every Python reader agree.

The C and OpenCL constants are checked, not generated: these tests parse them from the sources.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.activations import BY_NAME, BY_ONNX_OP, CODES, FUSED, NATIVE_KINDS, TABLE, is_non_decreasing
from edgeinfer.ops import OPS
from edgeinfer.ops.activations import IMPLEMENTATIONS, apply_activation

ROOT = Path(__file__).resolve().parents[1]


def _opencl_defines() -> dict[str, int]:
    text = (ROOT / "kernels" / "opencl" / "common.cl").read_text()
    return {name: int(value) for name, value in re.findall(r"^#define ACT_(\w+) (\d+)\s*$", text, re.M)}


def _native_enum() -> list[str]:
    text = (ROOT / "kernels" / "cpu" / "conv_hwc.c").read_text()
    members = re.search(r"enum \{ (ACT_CLAMP[^}]*) \};", text)
    assert members, "conv_hwc.c: the enum of activation kinds starting ACT_CLAMP was not found"
    names = [m.strip().removeprefix("ACT_") for m in members.group(1).split(",")]
    assert names[-1] == "COUNT"
    return names[:-1]


def test_opencl_codes_equal_the_table() -> None:
    assert _opencl_defines() == {name.upper(): code for name, code in CODES.items()}


def test_opencl_kernels_apply_every_code() -> None:
    text = (ROOT / "kernels" / "opencl" / "common.cl").read_text()
    applied = set(re.findall(r"case ACT_(\w+):", text))
    assert applied == {a.name.upper() for a in TABLE}


def test_native_kinds_equal_the_c_enum() -> None:
    assert _native_enum() == list(NATIVE_KINDS)
    isa = (ROOT / "kernels" / "cpu" / "conv_hwc_isa.h").read_text()
    applied = set(re.findall(r"case ACT_(\w+):", isa)) - {"IDENTITY"}
    assert applied | {"CLAMP"} == set(NATIVE_KINDS)  # the clamp is the default branch
    assert {a.native_kind for a in TABLE if a.native_kind} <= set(NATIVE_KINDS)


def test_numpy_implements_exactly_the_fused_activations() -> None:
    assert set(IMPLEMENTATIONS) == set(FUSED)
    assert all(BY_NAME[name].fused for name in FUSED)
    assert all(BY_NAME[name].onnx_op in OPS for name in FUSED if BY_NAME[name].onnx_op)


def test_codes_and_ops_are_unique() -> None:
    assert len(set(CODES.values())) == len(CODES)
    assert len(BY_ONNX_OP) == sum(a.onnx_op is not None for a in TABLE)


@pytest.mark.parametrize("name", [a.name for a in TABLE if a.fused and a.non_decreasing])
def test_non_decreasing_activations_never_decrease(name: str) -> None:
    x = np.linspace(-20, 20, 4001, dtype=np.float32)
    y = apply_activation(x, name)
    assert np.all(np.diff(y) >= 0)
    assert is_non_decreasing(name, None)


def test_other_fused_activations_decrease_somewhere_and_slopes_count() -> None:
    x = np.linspace(-20, 20, 4001, dtype=np.float32)
    for a in TABLE:
        if a.fused and not a.non_decreasing:
            assert np.any(np.diff(apply_activation(x, a.name)) < 0), a.name
            assert not is_non_decreasing(a.name, None)
    assert not is_non_decreasing("leaky_relu", [-0.5])
    assert is_non_decreasing("hard_sigmoid", [0.0, 0.5])
    assert not is_non_decreasing(None, None)


def test_finite_at_zero_matches_the_numpy_ops() -> None:
    zero = np.zeros(1, np.float32)
    for a in TABLE:
        if a.onnx_op in OPS:  # the NumPy reference of its stand-alone op
            with np.errstate(divide="ignore"):
                value = OPS[a.onnx_op].fn([zero], {})[0][0]
            assert math.isfinite(value) == a.finite_at_zero, a.name
