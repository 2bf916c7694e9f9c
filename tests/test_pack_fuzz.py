"""Fuzzing the pack loader (issue 18): every mutated pack is refused with a PackError or loads and runs cleanly.

Hypothesis mutates a small CNN's pack (depthwise Conv with a fused activation, MaxPool, 1x1 Conv, Concat,
Flatten, Gemm: every geometry the native kernels see) in three ways: a header field anywhere in the JSON
replaced by another JSON value, a node attribute set to a value chosen from the interesting ones (negative,
zero, huge, non-finite, wrong type), and raw bytes overwritten in the header text (re-signed, so that the
CRC does not hide the change) or anywhere in the file. Each case is loaded on the NumPy backend with and
without the native kernels (``cpu`` and ``cpu:numpy``) and, if it loads, run on a random input.

The CI budget is fixed (1000 deterministic examples per test, about 15 s in all on the 2-core machine).
For a longer hunt::

    EDGEINFER_FUZZ_EXAMPLES=20000 EDGEINFER_FUZZ_RANDOM=1 flock /tmp/cpu.lock pytest tests/test_pack_fuzz.py

(OpenCL is not fuzzed: each mutated geometry would build new programs, seconds each on PoCL.)
"""

from __future__ import annotations

import copy
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeinfer import PackError, Session
from edgeinfer.errors import EdgeInferError
from edgeinfer.pack import FORMAT_VERSION, write_pack

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_pack_validation import small_cnn  # noqa: E402

EXAMPLES = int(os.environ.get("EDGEINFER_FUZZ_EXAMPLES", "1000"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("EDGEINFER_FUZZ_RANDOM"),
    suppress_health_check=list(HealthCheck),
)
DEVICES = ("cpu", "cpu:numpy")


def _pack_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_pack(small_cnn(), Path(d) / "cnn.pack")
        return (Path(d) / "cnn.pack").read_bytes()


PACK = _pack_bytes()
_HEADER_LEN = struct.unpack("<Q", PACK[16:24])[0]
HEADER = json.loads(PACK[24 : 24 + _HEADER_LEN])
WEIGHTS = PACK[(24 + _HEADER_LEN + 63) // 64 * 64 :]
X = np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)


def sign(raw: bytes) -> bytes:
    """A pack from header text and the original weights, with a correct header CRC."""
    prefix = b"EDGEPACK" + struct.pack("<IIQ", FORMAT_VERSION, zlib.crc32(raw), len(raw))
    return prefix + raw + b"\0" * ((24 + len(raw) + 63) // 64 * 64 - 24 - len(raw)) + WEIGHTS


def load_and_run(data: bytes, tmp: Path) -> None:
    """The property: PackError at load, or a load and a run that both succeed."""
    path = tmp / "fuzz.pack"
    path.write_bytes(data)
    for device in DEVICES:
        try:
            session = Session(path, device=device)
        except PackError:
            continue
        try:
            session.run({"x": X})
        except EdgeInferError as e:  # an input error, since the input is fixed: a validation gap
            raise AssertionError(f"pack loaded on {device} but the run failed: {e!r}") from e


# --- strategies -----------------------------------------------------------------------------------

INTERESTING_INTS = [-(2**63), -(2**31), -1000, -2, -1, 0, 1, 2, 3, 7, 8, 9, 16, 63, 64, 65, 2**31 - 1, 2**31, 2**63]
ints = st.one_of(st.sampled_from(INTERESTING_INTS), st.integers(-100, 100), st.integers())
floats = st.one_of(st.sampled_from([0.5, 65.5, 1e30, float("inf"), float("-inf"), float("nan")]), st.floats())
scalars = st.one_of(
    ints,
    floats,
    st.booleans(),
    st.none(),
    st.sampled_from(["float32", "b1", "|S4", "object", "Conv", "Concat", "relu", "gelu", "cpu", "y", "x", "c", ""]),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
int_lists = st.lists(ints, min_size=0, max_size=5)
ATTR_NAMES = [
    "kernel_shape",
    "strides",
    "dilations",
    "pads",
    "group",
    "axis",
    "activation",
    "activation_params",
    "transA",
    "transB",
    "alpha",
    "ceil_mode",
    "num_outputs",
    "storage_order",
    "auto_pad",
    "out",
]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside the header (dict keys and list indices)."""
    out = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for k, v in items:
        out.extend(_paths(v, (*prefix, k)))
    return out


PATHS = [p for p in _paths(HEADER) if p and p[0] != "metadata"] + [("metadata", "labels"), ("metadata", "pipeline")]


def _set(header: dict, path: tuple, value: Any) -> None:
    target = header
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value


@SETTINGS
@given(path=st.sampled_from(PATHS), value=json_values)
def test_fuzz_header_field(tmp_path, path, value):
    header = copy.deepcopy(HEADER)
    _set(header, path, value)
    load_and_run(sign(json.dumps(header).encode()), tmp_path)


@SETTINGS
@given(
    node=st.integers(0, len(HEADER["nodes"]) - 1),
    key=st.sampled_from(ATTR_NAMES),
    value=st.one_of(int_lists, ints, floats, scalars, st.lists(floats, max_size=3)),
    op=st.one_of(st.none(), st.sampled_from(["Conv", "MaxPool", "AveragePool", "Concat", "Gemm", "Relu", "Flatten"])),
)
def test_fuzz_node_attribute(tmp_path, node, key, value, op):
    header = copy.deepcopy(HEADER)
    header["nodes"][node]["attrs"][key] = value
    if op is not None:
        header["nodes"][node]["op"] = op
    load_and_run(sign(json.dumps(header).encode()), tmp_path)


@SETTINGS
@given(data=st.data())
def test_fuzz_bytes(tmp_path, data):
    raw = bytearray(PACK[24 : 24 + _HEADER_LEN])
    resign = data.draw(st.booleans(), label="re-sign the header")
    target = bytearray(raw) if resign else bytearray(PACK)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(target) - 1), label="offset")
        chunk = data.draw(st.binary(min_size=0, max_size=4), label="bytes")
        if data.draw(st.booleans(), label="insert"):
            target[at:at] = chunk
        else:
            target[at : at + len(chunk)] = chunk
    load_and_run(sign(bytes(target)) if resign else bytes(target), tmp_path)


def test_unmutated_pack_runs(tmp_path):
    """The fuzz target itself loads and runs (else every case would trivially be a PackError)."""
    load_and_run(PACK, tmp_path)
    path = tmp_path / "fuzz.pack"
    assert Session(path, device="cpu").run({"x": X})["y"].shape == (1, 10)
