"""The .pack format: round trip, and a clear PackError for every kind of bad file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgeinfer import PackError
from edgeinfer.backends import numpy as numpy_backend
from edgeinfer.ir import Node, TensorInfo
from edgeinfer.pack import FORMAT_VERSION, read_pack, write_pack


@pytest.fixture
def pack_file(tiny, tmp_path) -> Path:
    path = tmp_path / "tiny.pack"
    write_pack(tiny, path)
    return path


def test_round_trip_keeps_graph_and_weights(tiny, pack_file):
    graph = read_pack(pack_file)
    assert [n.op for n in graph.nodes] == ["Relu", "Add"]
    assert graph.tensors["x"].shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(graph.constants["b"], tiny.constants["b"])
    assert not graph.constants["b"].flags.writeable  # memory-mapped, read-only, not copied
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    y = numpy_backend.prepare(graph).run({"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x, 0) + tiny.constants["b"])


def test_tensor_attributes_round_trip(tiny, tmp_path):
    # (on a Constant node: validation refuses attributes that the op does not define)
    tiny.nodes.insert(0, Node("c0", "Constant", [], ["c"], {"value": np.array([1.5, 2.5], dtype=np.float32)}))
    tiny.tensors["c"] = TensorInfo("c", (2,), "float32")
    write_pack(tiny, tmp_path / "a.pack")
    value = read_pack(tmp_path / "a.pack").nodes[0].attrs["value"]
    assert value.dtype == np.float32 and value.tolist() == [1.5, 2.5]


def test_weights_are_64_byte_aligned(tiny, tmp_path):
    tiny.constants["w"] = np.ones((3, 5), dtype=np.float32)  # 60 bytes: the next constant must skip to 64
    tiny.constants["v"] = np.ones(7, dtype=np.float64)
    write_pack(tiny, tmp_path / "a.pack")
    graph = read_pack(tmp_path / "a.pack")
    assert all(a.ctypes.data % 64 == 0 for a in graph.constants.values())


def _corrupt(path: Path, offset: int, value: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))


def test_foreign_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x04onnx-looking bytes")
    with pytest.raises(PackError, match="not an edgeinfer pack"):
        read_pack(path)


def test_empty_file(tmp_path):
    (tmp_path / "e.pack").write_bytes(b"")
    with pytest.raises(PackError, match="not an edgeinfer pack"):
        read_pack(tmp_path / "e.pack")


def test_missing_file(tmp_path):
    with pytest.raises(PackError, match="cannot read pack"):
        read_pack(tmp_path / "nope.pack")


@pytest.mark.parametrize("keep", [10, 30, 200, -1])
def test_truncated(pack_file, keep):
    data = pack_file.read_bytes()
    pack_file.write_bytes(data[:keep])
    with pytest.raises(PackError, match="truncated|not an edgeinfer pack"):
        read_pack(pack_file)


def test_newer_version(pack_file):
    _corrupt(pack_file, 8, struct.pack("<I", FORMAT_VERSION + 1))
    with pytest.raises(PackError, match="format version 2.*upgrade"):
        read_pack(pack_file)


def test_corrupt_header(pack_file):
    _corrupt(pack_file, 40, b"#")
    with pytest.raises(PackError, match="header checksum"):
        read_pack(pack_file)


def test_corrupt_weights(pack_file):
    _corrupt(pack_file, pack_file.stat().st_size - 60, b"\xff\xff")
    with pytest.raises(PackError, match="weights checksum"):
        read_pack(pack_file)


def _rewrite_header(path: Path, edit) -> None:
    """Edit the JSON header and re-sign it, as a malicious or buggy writer could."""
    import zlib

    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[16:24])[0]
    old_data_start = (24 + header_len + 63) // 64 * 64
    header = json.loads(data[24 : 24 + header_len])
    edit(header)
    raw = json.dumps(header).encode()
    prefix = b"EDGEPACK" + struct.pack("<IIQ", FORMAT_VERSION, zlib.crc32(raw), len(raw))
    pad = (24 + len(raw) + 63) // 64 * 64 - 24 - len(raw)
    path.write_bytes(prefix + raw + b"\0" * pad + data[old_data_start:])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h.update(format="other"), "does not describe an edgeinfer pack"),
        (lambda h: h["constants"][0].update(offset=10**9), "outside the data section"),
        (lambda h: h["constants"][0].update(dtype="object"), "unsupported dtype"),
        (lambda h: h["nodes"][0].update(op="Launch"), "uses op 'Launch'"),
        (lambda h: h["nodes"][0].update(inputs=["ghost"]), "reads 'ghost' before it is computed"),
        (lambda h: h.pop("nodes"), "malformed header"),
        (lambda h: h["tensors"]["x"].update(shape="abc"), "malformed header"),
    ],
)
def test_malformed_header_is_a_pack_error(pack_file, edit, message):
    _rewrite_header(pack_file, edit)
    with pytest.raises(PackError, match=message):
        read_pack(pack_file)


def test_failed_write_leaves_no_file(tiny, tmp_path):
    tiny.constants["bad"] = np.array(["a"], dtype=object)
    with pytest.raises(PackError, match="cannot store"):
        write_pack(tiny, tmp_path / "x.pack")
    assert list(tmp_path.iterdir()) == []
