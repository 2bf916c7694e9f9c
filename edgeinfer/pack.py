"""The ``.pack`` file: one compiled model in one file (format described in docs/pack-format.md).

Layout::

    offset 0   magic   b"EDGEPACK"
           8   u32     format version (little endian)
          12   u32     crc32 of the header bytes
          16   u64     header length in bytes
          24   header  UTF-8 JSON: graph, tensors, memory plan, metadata, constants index
           .   padding to a 64-byte boundary
           .   data    constants, each starting on a 64-byte boundary

Only JSON and raw little-endian array bytes are read: nothing in a pack is ever executed. Constants
are memory-mapped read-only, so loading a pack copies no weights.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import PackError
from edgeinfer.ir import Graph, MemoryPlan, Node, TensorInfo

MAGIC = b"EDGEPACK"
FORMAT_VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<8sIIQ")  # magic, version, header crc32, header length
# Dtypes a pack may hold; anything else is refused on read (no object arrays, no pickle).
_DTYPES = {
    "float32",
    "float16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "bool",
}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _encode_attr(value: Any) -> Any:
    """Attributes are JSON; tensor-valued ones are tagged so that they decode back to arrays."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": {"dtype": value.dtype.name, "shape": list(value.shape), "data": value.ravel().tolist()}}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_encode_attr(v) for v in value]
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        spec = value["__ndarray__"]
        if spec["dtype"] not in _DTYPES:
            raise PackError(f"attribute array has unsupported dtype {spec['dtype']!r}")
        return np.array(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
    if isinstance(value, list):
        return [_decode_attr(v) for v in value]
    return value


def write_pack(graph: Graph, path: str | os.PathLike) -> None:
    """Write ``graph`` to ``path`` atomically (a crash never leaves a half-written pack behind)."""
    index = []
    offset = 0
    arrays = []
    for name, array in graph.constants.items():
        array = np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d arrays 1-d
        if array.dtype.name not in _DTYPES:
            raise PackError(f"constant {name!r} has dtype {array.dtype.name}, which a pack cannot store")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        index.append(
            {
                "name": name,
                "dtype": array.dtype.name,
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": array.nbytes,
            }
        )
        arrays.append((offset, array))
        offset = _align(offset + array.nbytes)
    data = bytearray(offset)
    for start, array in arrays:
        data[start : start + array.nbytes] = array.tobytes()
    header = {
        "format": "edgeinfer.pack",
        "format_version": FORMAT_VERSION,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "tensors": {name: info.to_json() for name, info in graph.tensors.items()},
        "nodes": [dict(n.to_json(), attrs={k: _encode_attr(v) for k, v in n.attrs.items()}) for n in graph.nodes],
        "memory_plan": graph.memory_plan.to_json(),
        "metadata": graph.metadata,
        "constants": index,
        "data": {"size": len(data), "crc32": zlib.crc32(data)},
    }
    header_bytes = json.dumps(header, separators=(",", ":"), default=_encode_attr).encode()
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, zlib.crc32(header_bytes), len(header_bytes))
    pad = _align(len(prefix) + len(header_bytes)) - len(prefix) - len(header_bytes)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prefix + header_bytes + b"\0" * pad)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_pack(path: str | os.PathLike, verify: bool = True) -> Graph:
    """Load a pack; raise :class:`PackError` saying what is wrong for anything that is not a valid pack.

    ``verify`` checks the weights' crc32 (a few milliseconds for a 14 MB model).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size or not prefix.startswith(MAGIC):
                raise PackError(f"{path} is not an edgeinfer pack (no EDGEPACK magic at the start)")
            _, version, header_crc, header_len = _PREFIX.unpack(prefix)
            if version > FORMAT_VERSION:
                raise PackError(
                    f"{path} has pack format version {version}; this edgeinfer reads up to version "
                    f"{FORMAT_VERSION}: upgrade edgeinfer or recompile the model"
                )
            if version < 1:
                raise PackError(f"{path} has invalid pack format version {version}")
            if _PREFIX.size + header_len > size:
                raise PackError(f"{path} is truncated: header needs {header_len} bytes, file has {size}")
            header_bytes = f.read(header_len)
    except OSError as e:
        raise PackError(f"cannot read pack {path}: {e.strerror or e}") from e
    if zlib.crc32(header_bytes) != header_crc:
        raise PackError(f"{path} is corrupt: header checksum mismatch")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{path} is corrupt: header is not valid JSON ({e})") from e
    data_start = _align(_PREFIX.size + header_len)
    try:
        return _graph_from_header(header, path, size, data_start, verify)
    except PackError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PackError(f"{path} is corrupt: malformed header ({type(e).__name__}: {e})") from e


def _graph_from_header(header: dict, path: Path, size: int, data_start: int, verify: bool) -> Graph:
    if header.get("format") != "edgeinfer.pack":
        raise PackError(f"{path} header does not describe an edgeinfer pack")
    data_size = int(header["data"]["size"])
    if data_start + data_size > size:
        raise PackError(f"{path} is truncated: expected {data_start + data_size} bytes, file has {size}")
    constants: dict[str, np.ndarray] = {}
    if data_size:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = memoryview(mapped)[data_start : data_start + data_size]
        if verify and zlib.crc32(data) != int(header["data"]["crc32"]):
            raise PackError(f"{path} is corrupt: weights checksum mismatch")
        for entry in header["constants"]:
            dtype, shape = str(entry["dtype"]), tuple(int(s) for s in entry["shape"])
            if dtype not in _DTYPES:
                raise PackError(f"{path}: constant {entry['name']!r} has unsupported dtype {dtype!r}")
            start, nbytes = int(entry["offset"]), int(entry["nbytes"])
            count = int(np.prod(shape, dtype=np.int64))
            if start < 0 or start + nbytes > data_size or nbytes != count * np.dtype(dtype).itemsize:
                raise PackError(f"{path} is corrupt: constant {entry['name']!r} lies outside the data section")
            constants[str(entry["name"])] = np.frombuffer(
                data, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start
            ).reshape(shape)
    tensors = {str(name): TensorInfo.from_json(name, d) for name, d in header["tensors"].items()}
    nodes = []
    for d in header["nodes"]:
        node = Node.from_json(d)
        node.attrs = {k: _decode_attr(v) for k, v in node.attrs.items()}
        nodes.append(node)
    graph = Graph(
        nodes=nodes,
        inputs=[str(x) for x in header["inputs"]],
        outputs=[str(x) for x in header["outputs"]],
        tensors=tensors,
        constants=constants,
        metadata=dict(header.get("metadata", {})),
        memory_plan=MemoryPlan.from_json(header.get("memory_plan", {})),
    )
    _check_graph(graph, path)
    return graph


def _check_graph(graph: Graph, path: Path) -> None:
    """Refuse a header whose graph uses unknown ops or refers to tensors that do not exist or are computed too late."""
    from edgeinfer.ops import OPS  # the op registry; imported here to keep pack.py light to import

    known = set(graph.inputs) | set(graph.constants)
    for name in graph.inputs:
        if name not in graph.tensors:
            raise PackError(f"{path} is corrupt: graph input {name!r} has no tensor entry")
    for node in graph.nodes:
        if node.op not in OPS:
            raise PackError(
                f"{path}: node {node.name!r} uses op {node.op!r}, which this edgeinfer version does not "
                "implement (was the pack made by a newer edgeinfer?)"
            )
        for name in node.inputs:
            if name and name not in known:
                raise PackError(f"{path} is corrupt: node {node.name!r} reads {name!r} before it is computed")
        known.update(o for o in node.outputs if o)
    for name in graph.outputs:
        if name not in known:
            raise PackError(f"{path} is corrupt: graph output {name!r} is never computed")
