"""The pack header's schema: what a header must look like before anything is built from it.

A pack is a file users download and share, so its header (JSON, signed only by a CRC anyone can
recompute) is untrusted input. It is parsed with bounded integer literals and nesting, then every field
is checked for type, range and cross-reference here, so that the graph built from it afterwards only
ever sees well-typed values: integers that are finite and non-negative where they are sizes or offsets,
dtypes from a whitelist, names that resolve, and constants that lie, aligned and without overlap, inside
the data section. Every failure is a :class:`PackError` naming the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edgeinfer.errors import PackError
from edgeinfer.ir import DEVICE, HOST

MAX_HEADER_BYTES = 64 << 20
MAX_DEPTH = 32  # the compiler writes at most 5 levels
MAX_INT_DIGITS = 20  # enough for any int64 or uint64
MAX_RANK = 16
MAX_DIM = 2**31 - 1
# Kernels index tensors with 32-bit integers; no tensor of a CNN on a small device comes near this.
MAX_ELEMENTS = 2**31 - 1
MAX_NAME = 4096
MAX_LIST = 1 << 24  # elements of one list in the header (labels, attribute arrays)
CONSTANT_ALIGN = 64
# Dtypes a pack may hold; anything else is refused on read (no object arrays, no pickle).
DTYPES = frozenset(
    {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"}
)
ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "float16": 2, "int16": 2, "uint16": 2}
ITEMSIZE.update({"float32": 4, "int32": 4, "uint32": 4, "float64": 8, "int64": 8, "uint64": 8})
PLACEMENTS = frozenset({DEVICE, HOST})


def parse_header(header_bytes: bytes, where: str) -> dict[str, Any]:
    """Decode the header JSON with bounded integer literals and no duplicate keys (json's own recursion
    limit bounds the nesting; ``check_metadata`` bounds it further where the schema does not)."""
    try:
        header = json.loads(header_bytes, parse_int=_bounded_int, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise PackError(f"{where} is corrupt: header nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{where} is corrupt: header is not valid JSON ({e})") from e
    except _LiteralError as e:
        raise PackError(f"{where} is corrupt: {e}") from None
    if not isinstance(header, dict):
        raise PackError(f"{where} is corrupt: header is a JSON {type(header).__name__}, expected an object")
    return header


class _LiteralError(ValueError):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _LiteralError(f"header holds an integer literal of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _LiteralError(f"header repeats the key {key!r} in one object")
    return d


def _check_depth(value: Any, where: str) -> None:
    """Iteratively (a recursive walk could itself overflow the stack) bound the nesting depth.

    Only free-form values need this (metadata): the schema fixes the depth of everything else.
    """
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PackError(f"{where} is corrupt: header nests deeper than {MAX_DEPTH} levels")
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((x, depth + 1) for x in children if isinstance(x, (dict, list)))


# --- typed field readers ------------------------------------------------------------------------


def is_int(v: Any) -> bool:
    return type(v) is int  # JSON true/false are Python bools, which are ints: not accepted


def is_number(v: Any) -> bool:
    return type(v) in (int, float)


def need(cond: bool, where: str, field: str, expected: str, got: Any) -> None:
    if not cond:
        raise PackError(f"{where} has a malformed header: {field} must be {expected}; got {_show(got)}")


def _show(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def count(v: Any, where: str, field: str, limit: int = 2**63 - 1) -> int:
    """A finite non-negative integer (sizes, offsets, dims)."""
    need(is_int(v) and 0 <= v <= limit, where, field, f"an integer in [0, {limit}]", v)
    return v


def name(v: Any, where: str, field: str, allow_empty: bool = False) -> str:
    ok = isinstance(v, str) and len(v) <= MAX_NAME and (allow_empty or v != "")
    need(ok, where, field, "a tensor name (a non-empty string)" if not allow_empty else "a string", v)
    return v


def names(v: Any, where: str, field: str, allow_empty: bool = False) -> list[str]:
    need(isinstance(v, list) and len(v) <= MAX_LIST, where, field, "a list of names", v)
    return [name(x, where, f"{field}[{i}]", allow_empty) for i, x in enumerate(v)]


def keys(d: Any, where: str, field: str, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:
    need(isinstance(d, dict), where, field, "an object", d)
    missing = sorted(required - set(d))
    if missing:
        raise PackError(f"{where} has a malformed header: {field} lacks the key(s) {missing}")
    unknown = sorted(set(d) - required - set(optional))
    if unknown:
        raise PackError(
            f"{where} has a malformed header: {field} has unknown key(s) {unknown}; expected {sorted(required)}"
        )
    return d


def shape(v: Any, where: str, field: str) -> tuple[int, ...]:
    need(isinstance(v, list) and len(v) <= MAX_RANK, where, field, f"a list of at most {MAX_RANK} dims", v)
    dims = tuple(count(d, where, f"{field}[{i}]", MAX_DIM) for i, d in enumerate(v))
    elements = math.prod(dims)
    need(elements <= MAX_ELEMENTS, where, field, f"a shape of at most {MAX_ELEMENTS} elements", v)
    return dims


def dtype(v: Any, where: str, field: str) -> str:
    if not (isinstance(v, str) and v in DTYPES):
        raise PackError(
            f"{where}: {field} is an unsupported dtype {_show(v)}; expected one of {', '.join(sorted(DTYPES))}"
        )
    return v


# --- the header -------------------------------------------------------------------------------


_TOP = {"format", "format_version", "inputs", "outputs", "tensors", "nodes", "memory_plan", "metadata", "constants"}


def check_header(h: dict[str, Any], where: str, format_version: int, data_size_limit: int) -> None:
    """Raise :class:`PackError` naming the field for anything the graph builder could not take as is."""
    if h.get("format") != "edgeinfer.pack":
        raise PackError(f"{where} header does not describe an edgeinfer pack")
    keys(h, where, "the header", _TOP | {"data"})
    need(
        is_int(h["format_version"]) and 1 <= h["format_version"] <= format_version,
        where,
        "format_version",
        f"an integer in [1, {format_version}]",
        h["format_version"],
    )
    tensors = _check_tensors(h["tensors"], where)
    inputs = names(h["inputs"], where, "inputs")
    outputs = names(h["outputs"], where, "outputs")
    need(len(outputs) > 0, where, "outputs", "a non-empty list", outputs)
    for field, listed in (("inputs", inputs), ("outputs", outputs)):
        for n in listed:
            if n not in tensors:
                raise PackError(f"{where} is corrupt: {field} names {n!r}, which has no entry in 'tensors'")
        need(len(set(listed)) == len(listed), where, field, "a list without repeats", listed)
    constant_names = _check_constants(h["constants"], h["data"], tensors, where, data_size_limit)
    produced = set(inputs) | constant_names
    if set(inputs) & constant_names:
        raise PackError(f"{where} is corrupt: {sorted(set(inputs) & constant_names)[0]!r} is an input and a constant")
    _check_nodes(h["nodes"], tensors, produced, where)
    _check_memory_plan(h["memory_plan"], tensors, where)
    need(isinstance(h["metadata"], dict), where, "metadata", "an object", h["metadata"])
    check_metadata(h["metadata"], where)


def _check_tensors(d: Any, where: str) -> dict[str, dict[str, Any]]:
    need(isinstance(d, dict) and len(d) <= MAX_LIST, where, "tensors", "an object of tensor entries", d)
    for n, t in d.items():
        name(n, where, "a tensor name")
        keys(t, where, f"tensors[{n!r}]", {"shape", "dtype"}, {"dynamic"})
        shape(t["shape"], where, f"tensors[{n!r}].shape")
        dtype(t["dtype"], where, f"tensors[{n!r}].dtype")
        if "dynamic" in t:
            need(isinstance(t["dynamic"], bool), where, f"tensors[{n!r}].dynamic", "true or false", t["dynamic"])
    return d


def _check_constants(entries: Any, data: Any, tensors: dict[str, Any], where: str, data_size_limit: int) -> set[str]:
    """Every constant names a tensor of its shape and dtype and lies, 64-byte aligned, alone in the data."""
    keys(data, where, "data", {"size", "crc32"})
    size = count(data["size"], where, "data.size", data_size_limit)
    count(data["crc32"], where, "data.crc32", 2**32 - 1)
    need(isinstance(entries, list) and len(entries) <= MAX_LIST, where, "constants", "a list", entries)
    spans = []
    seen: set[str] = set()
    for i, c in enumerate(entries):
        field = f"constants[{i}]"
        keys(c, where, field, {"name", "dtype", "shape", "offset", "nbytes"})
        n = name(c["name"], where, f"{field}.name")
        field = f"constant {n!r}"
        if n in seen:
            raise PackError(f"{where} is corrupt: constant {n!r} is listed twice")
        seen.add(n)
        dims = shape(c["shape"], where, f"{field} shape")
        dt = dtype(c["dtype"], where, f"{field} dtype")
        offset = count(c["offset"], where, f"{field} offset")
        nbytes = count(c["nbytes"], where, f"{field} nbytes")
        need(offset % CONSTANT_ALIGN == 0, where, f"{field} offset", f"a multiple of {CONSTANT_ALIGN}", offset)
        need(
            nbytes == math.prod(dims) * ITEMSIZE[dt],
            where,
            f"{field} nbytes",
            f"{math.prod(dims)} elements x {ITEMSIZE[dt]} bytes",
            nbytes,
        )
        if offset + nbytes > size:
            raise PackError(
                f"{where} is corrupt: constant {n!r} lies outside the data section "
                f"(bytes {offset}..{offset + nbytes} of {size})"
            )
        t = tensors.get(n)
        if t is None:
            raise PackError(f"{where} is corrupt: constant {n!r} has no entry in 'tensors'")
        if tuple(t["shape"]) != dims or t["dtype"] != dt:
            raise PackError(
                f"{where} is corrupt: constant {n!r} is {dt}{list(dims)} in the data index but "
                f"{t['dtype']}{t['shape']} in 'tensors'"
            )
        spans.append((offset, nbytes, n))
    spans.sort()
    for (o1, n1, a), (o2, _, b) in zip(spans, spans[1:]):
        if o1 + n1 > o2:
            raise PackError(f"{where} is corrupt: constants {a!r} and {b!r} overlap in the data section")
    return seen


_NODE_KEYS = {"name", "op", "inputs", "outputs"}


def _check_nodes(nodes: Any, tensors: dict[str, Any], produced: set[str], where: str) -> None:
    """Node fields are typed, names unique, every tensor has an entry and is written once, before it is read."""
    from edgeinfer.ops import OPS  # the op registry; imported here to keep the header checks light

    need(isinstance(nodes, list) and len(nodes) <= MAX_LIST, where, "nodes", "a list", nodes)
    node_names: set[str] = set()
    for i, d in enumerate(nodes):
        keys(d, where, f"nodes[{i}]", _NODE_KEYS, {"attrs", "placement"})
        n = name(d["name"], where, f"nodes[{i}].name", allow_empty=True)
        if n in node_names:
            raise PackError(f"{where} is corrupt: two nodes are named {n!r}")
        node_names.add(n)
        node = f"node {n!r}"
        op = d["op"]
        need(isinstance(op, str), where, f"{node} op", "an op name", op)
        if op not in OPS:
            raise PackError(
                f"{where}: {node} uses op {op!r}, which this edgeinfer version does not implement "
                "(was the pack made by a newer edgeinfer?)"
            )
        ins = names(d["inputs"], where, f"{node} inputs", allow_empty=True)
        outs = names(d["outputs"], where, f"{node} outputs", allow_empty=True)
        need(any(outs), where, f"{node} outputs", "a list naming at least one tensor", outs)
        need(
            isinstance(d.get("placement", "device"), str) and d.get("placement", "device") in PLACEMENTS,
            where,
            f"{node} placement",
            "'device' or 'cpu'",
            d.get("placement"),
        )
        attrs = d.get("attrs", {})
        need(isinstance(attrs, dict), where, f"{node} attrs", "an object", attrs)
        for key, value in attrs.items():
            check_attr_value(value, where, f"{node} attribute {key!r}")
        for x in ins:
            if x and x not in produced:
                raise PackError(f"{where} is corrupt: {node} reads {x!r} before it is computed")
        for x in outs:
            if not x:
                continue
            if x in produced:
                raise PackError(f"{where} is corrupt: {node} writes {x!r}, which is already an input or written")
            if x not in tensors:
                raise PackError(f"{where} is corrupt: {node} output {x!r} has no entry in 'tensors'")
            produced.add(x)


def check_attr_value(v: Any, where: str, field: str) -> None:
    """Attribute values are numbers, strings and flat lists of those, or tagged arrays."""
    if isinstance(v, (bool, str)) or is_number(v):  # op checks bound the values that matter
        return
    if isinstance(v, list):
        need(
            len(v) <= MAX_LIST and all(type(x) in (int, float, str) for x in v),
            where,
            field,
            "a flat list of numbers or strings",
            v,
        )
        return
    if isinstance(v, dict) and set(v) == {"__ndarray__"}:
        spec = keys(v["__ndarray__"], where, field, {"dtype", "shape", "data"})
        dt = dtype(spec["dtype"], where, f"{field} dtype")
        dims = shape(spec["shape"], where, f"{field} shape")
        data = spec["data"]
        need(
            isinstance(data, list) and len(data) == math.prod(dims) and len(data) <= MAX_LIST,
            where,
            field,
            f"{math.prod(dims)} array elements",
            data,
        )
        numeric = (bool,) if dt == "bool" else (int,) if dt[0] in "iu" else (int, float)
        need(all(type(x) in numeric for x in data), where, f"{field} data", f"{dt} values", data)
        return
    need(False, where, field, "a number, a string, a flat list or a tagged array", v)


def _check_memory_plan(plan: Any, tensors: dict[str, Any], where: str) -> None:
    """Offsets are aligned integers of known tensors inside the arena (overlaps: see validation.memory)."""
    keys(plan, where, "memory_plan", set(), {"offsets", "arena_bytes", "naive_bytes", "alignment"})
    alignment = plan.get("alignment", 256)
    need(
        is_int(alignment) and 1 <= alignment <= 4096 and alignment & (alignment - 1) == 0,
        where,
        "memory_plan.alignment",
        "a power of two up to 4096",
        alignment,
    )
    arena = count(plan.get("arena_bytes", 0), where, "memory_plan.arena_bytes", MAX_ELEMENTS * 8)
    count(plan.get("naive_bytes", 0), where, "memory_plan.naive_bytes")
    offsets = plan.get("offsets", {})
    need(isinstance(offsets, dict), where, "memory_plan.offsets", "an object", offsets)
    for n, offset in offsets.items():
        field = f"memory_plan offset of {n!r}"
        t = tensors.get(n)
        if t is None:
            raise PackError(f"{where} is corrupt: memory_plan places {n!r}, which has no entry in 'tensors'")
        count(offset, where, field)
        need(offset % alignment == 0, where, field, f"a multiple of {alignment}", offset)
        nbytes = math.prod(t["shape"]) * ITEMSIZE[t["dtype"]]
        if offset + nbytes > arena:
            raise PackError(
                f"{where} is corrupt: memory_plan places {n!r} at bytes {offset}..{offset + nbytes}, "
                f"outside the {arena}-byte arena"
            )


def check_metadata(meta: dict[str, Any], where: str) -> None:
    """The metadata the runtime reads: labels, FLOP counts (explain, bench) and the image pipeline."""
    _check_depth(meta, where)
    labels = meta.get("labels")
    if labels is not None:
        need(
            isinstance(labels, list) and all(isinstance(s, str) for s in labels),
            where,
            "metadata.labels",
            "a list of strings",
            labels,
        )
    if "flops" in meta:
        need(
            is_number(meta["flops"]) and 0 <= meta["flops"] < math.inf,
            where,
            "metadata.flops",
            "a non-negative number",
            meta["flops"],
        )
    flops = meta.get("node_flops", {})
    need(
        isinstance(flops, dict) and all(is_number(v) and 0 <= v < math.inf for v in flops.values()),
        where,
        "metadata.node_flops",
        "an object of non-negative numbers",
        flops,
    )
    if "precision" in meta:
        need(meta["precision"] in ("fp32", "fp16"), where, "metadata.precision", '"fp32" or "fp16"', meta["precision"])
    halves = meta.get("fp16_weights", [])
    need(isinstance(halves, list) and all(isinstance(s, str) for s in halves), where, "metadata.fp16_weights",
         "a list of constant names", halves)  # fmt: skip
    if meta.get("pipeline") is not None:
        need(isinstance(meta["pipeline"], dict), where, "metadata.pipeline", "an object", meta["pipeline"])
