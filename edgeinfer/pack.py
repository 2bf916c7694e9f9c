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
import math
import mmap
import os
import stat
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import PackError
from edgeinfer.ir import Graph, MemoryPlan, Node, TensorInfo
from edgeinfer.passes.precision import half_weights, widen_weights
from edgeinfer.validation import header as header_schema
from edgeinfer.validation.graph import validate_graph

MAGIC = b"EDGEPACK"
FORMAT_VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<8sIIQ")  # magic, version, header crc32, header length
_DTYPES = header_schema.DTYPES  # anything else is refused on read (no object arrays, no pickle)


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
    """Tagged arrays back to arrays (``validation.header.check_attr_value`` checked dtype, shape and values)."""
    if isinstance(value, dict) and "__ndarray__" in value:
        spec = value["__ndarray__"]
        try:
            return np.array(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
        except (OverflowError, ValueError) as e:  # e.g. 300 in a uint8 array
            raise PackError(f"attribute array holds values outside {spec['dtype']}: {e}") from e
    if isinstance(value, list):
        return [_decode_attr(v) for v in value]
    return value


def write_pack(graph: Graph, path: str | os.PathLike) -> None:
    """Write ``graph`` to ``path`` atomically (a crash never leaves a half-written pack behind)."""
    index = []
    offset = 0
    arrays = []
    halves = half_weights(graph)  # fp16 packs: these weights are stored as float16 (passes/precision.py)
    for name, array in graph.constants.items():
        array = np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d arrays 1-d
        if name in halves:
            array = array.astype(np.float16)
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
        "tensors": _tensor_table(graph, halves),
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
    if path.is_dir():
        raise PackError(f"cannot write pack {str(path)!r}: it is a directory; expected a file name such as model.pack")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name, suffix=".tmp")
    except OSError as e:
        raise PackError(f"cannot write pack {str(path)!r}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prefix + header_bytes + b"\0" * pad)
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise PackError(f"cannot write pack {str(path)!r}: {e.strerror or e}") from e
        raise


def _tensor_table(graph: Graph, halves: set[str]) -> dict[str, Any]:
    """The tensor entries, with one for every constant (a reader checks the constants against them); ``halves``:
    the constants stored as float16."""
    table = {name: info.to_json() for name, info in graph.tensors.items()}
    for name, array in graph.constants.items():
        table.setdefault(name, {"shape": list(array.shape), "dtype": array.dtype.name})
        if name in halves:
            table[name] = {**table[name], "dtype": "float16"}
    return table


def read_pack(path: str | os.PathLike, verify: bool = True) -> Graph:
    """Load a pack; raise :class:`PackError` saying what is wrong for anything that is not a valid pack.

    The header is validated before anything is built from it (``edgeinfer.validation``): a forged pack is
    refused here, never handed to a kernel. ``verify`` checks the weights' crc32 (a few milliseconds for a
    14 MB model).
    """
    path = Path(path)
    try:
        fd = _open_regular(path)
    except OSError as e:
        raise PackError(f"cannot read pack {path}: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        try:
            size = os.fstat(fd).st_size
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
            if header_len > header_schema.MAX_HEADER_BYTES:
                raise PackError(f"{path} has a {header_len}-byte header; at most {header_schema.MAX_HEADER_BYTES}")
            header_bytes = f.read(header_len)
        except OSError as e:
            raise PackError(f"cannot read pack {path}: {e.strerror or e}") from e
        if zlib.crc32(header_bytes) != header_crc:
            raise PackError(f"{path} is corrupt: header checksum mismatch")
        header = header_schema.parse_header(header_bytes, str(path))
        data_start = _align(_PREFIX.size + header_len)
        header_schema.check_header(header, str(path), FORMAT_VERSION, max(size - data_start, 0))
        graph = _graph_from_header(header, f, path, data_start, verify)
    widen_weights(graph, str(path))
    validate_graph(graph, str(path))
    return graph


def _open_regular(path: Path) -> int:
    """Open ``path`` for reading only if it is a regular file: a FIFO or device would block or never end.

    O_NONBLOCK makes the open itself return at once should the path be swapped for a FIFO after the stat.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise PackError(f"{path} is not a regular file (a directory, pipe or device cannot be a pack)")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PackError(f"{path} is not a regular file (a directory, pipe or device cannot be a pack)")
    return fd


def _graph_from_header(header: dict, f: Any, path: Path, data_start: int, verify: bool) -> Graph:
    """Build the graph from a header that ``validation.header.check_header`` accepted."""
    data_size = header["data"]["size"]
    constants: dict[str, np.ndarray] = {}
    if data_size:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = memoryview(mapped)[data_start : data_start + data_size]
        if verify and zlib.crc32(data) != header["data"]["crc32"]:
            raise PackError(f"{path} is corrupt: weights checksum mismatch")
        for entry in header["constants"]:
            dtype, shape = np.dtype(entry["dtype"]).newbyteorder("<"), tuple(entry["shape"])
            count = math.prod(shape)
            constants[entry["name"]] = np.frombuffer(data, dtype=dtype, count=count, offset=entry["offset"]).reshape(
                shape
            )
    tensors = {name: TensorInfo.from_json(name, d) for name, d in header["tensors"].items()}
    nodes = []
    for d in header["nodes"]:
        node = Node.from_json(d)
        node.attrs = {k: _decode_attr(v) for k, v in node.attrs.items()}
        nodes.append(node)
    return Graph(
        nodes=nodes,
        inputs=list(header["inputs"]),
        outputs=list(header["outputs"]),
        tensors=tensors,
        constants=constants,
        metadata=dict(header["metadata"]),
        memory_plan=MemoryPlan.from_json(header["memory_plan"]),
    )
