"""Tuned kernel-config tables: ``tuned_configs/<backend>/<device-key>.json`` (format: docs/tuned-configs.md).

A table maps (kernel template, workload signature) to the config measured fastest on one device. A lookup
that misses takes the config of the nearest tuned workload of the same template (distance in log space over
the workload's numeric fields), then the caller's heuristic default, and says which one it used.

A device without a table of its own borrows the table of the most similar device of its *family* (same
platform, same device kind: e.g. PoCL on any x86 CPU), because a table tuned on a sibling device beats the
heuristic defaults; a device whose own table lacks a template borrows that template the same way. Among
siblings, one of the device's own ISA class comes first (an AVX2 CPU borrows from an AVX2 table, whose tiles
fit its 16 vector registers, before an AVX-512 one); a config lent across ISA classes is only taken where the
caller accepts it (the OpenCL planner: where it is in the template's knob space for this device). Every config
source from a borrowed table ends in ``via <that table's key>``.

``edgeinfer tune`` writes the tables it makes to the user's data directory (``user_tables_dir()``); a user
table's entries take precedence over the shipped table of the same device, and their source reads
``tuned (user table)``. A table may also be completed per workload by another one (``with_lent_entries``: the
CUDA backend by the same GPU's OpenCL table); those entries' sources end in ``via <lender>`` too.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from edgeinfer.cpu_isa import isa_of_llvm_cpu

PACKAGE_DIR = Path(__file__).resolve().parent
TABLE_FORMAT_VERSION = 1

# Where a config came from, as shown by Session.explain().
TUNED, NEAREST, DEFAULT = "tuned", "nearest", "default"
USER_TABLE = "user table"  # the ``table`` mark of entries read from the user's tables
LENDER = "lender"  # the mark of entries lent by another table (with_lent_entries): its name, as sources show it
TUNED_DIR_ENV = "EDGEINFER_TUNED_DIR"


def user_tables_dir() -> Path:
    """Where ``edgeinfer tune`` writes tables by default and ``Session`` looks first: ``EDGEINFER_TUNED_DIR``,
    else the user data directory (``~/.local/share/edgeinfer/tuned_configs`` on Linux)."""
    if os.environ.get(TUNED_DIR_ENV):
        return Path(os.environ[TUNED_DIR_ENV])
    try:
        from platformdirs import user_data_dir
    except ImportError:
        return Path.home() / ".local" / "share" / "edgeinfer" / "tuned_configs"
    return Path(user_data_dir("edgeinfer")) / "tuned_configs"


def data_dir(name: str) -> Path:
    """Directory of shipped data ``name`` ("kernels", "tuned_configs").

    An installed wheel carries it as package data in ``edgeinfer/_data/<name>``; a source checkout has it at
    the repository root.
    """
    for candidate in (PACKAGE_DIR / "_data" / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"edgeinfer data directory {name!r} not found in {PACKAGE_DIR / '_data'} or {PACKAGE_DIR.parent}"
    )


def sanitize_key(text: str) -> str:
    """Lower-case ``text`` and keep only [a-z0-9], other runs becoming one '-' (file-name safe device keys)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def workload_signature(workload: dict[str, Any]) -> str:
    """Canonical text form of a workload, e.g. ``K=96,M=24,N=3136`` (sorted keys)."""
    return ",".join(f"{k}={workload[k]}" for k in sorted(workload))


@dataclass
class ConfigTable:
    """The tuned configs of one backend on one device."""

    backend: str
    device_key: str  # the device the table was tuned on
    entries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # template -> signature -> entry
    path: Path | None = None
    family: str = ""  # platform and device kind (runtime.device_family); tables are borrowed within a family
    isa: str = ""  # the vector ISA class it was tuned for (cpu_isa.py; "simt" for GPUs)
    fallback: ConfigTable | None = None  # a sibling's table, for the templates this one has no entries of

    def lookup(
        self,
        template: str,
        workload: dict[str, Any],
        default: Callable[[], dict[str, Any]],
        accept: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Config for ``template`` on ``workload`` and its source: tuned, nearest or default. A config borrowed
        from a table of another ISA class is only taken if ``accept`` (when given) accepts it."""
        if template not in self.entries and self.fallback is not None:
            config, source = self.fallback.lookup(template, workload, default)
            if source == DEFAULT:
                return config, source
            lender = self.fallback
            if accept is not None and lender.isa != self.isa and not accept(config):
                return default(), f"{DEFAULT} (the config via {lender.device_key} does not fit {self.isa})"
            return config, f"{source} via {lender.device_key}"
        tuned = self.entries.get(template, {})
        signature = workload_signature(workload)
        if signature in tuned:
            entry = tuned[signature]
            source = f"{TUNED} ({USER_TABLE})" if entry.get("table") == USER_TABLE else TUNED
            return dict(entry["config"]), source + _lent(entry)
        best, best_distance = None, math.inf
        for entry in tuned.values():
            distance = workload_distance(workload, entry["workload"])
            if distance < best_distance:
                best, best_distance = entry, distance
        if best is not None:
            return dict(best["config"]), f"{NEAREST} ({workload_signature(best['workload'])})" + _lent(best)
        return default(), DEFAULT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT_VERSION,
            "backend": self.backend,
            "device_key": self.device_key,
            "family": self.family,
            "isa": self.isa,
            "entries": [entry for per_template in self.entries.values() for entry in per_template.values()],
        }

    def add(self, template: str, workload: dict[str, Any], config: dict[str, Any], **extra: Any) -> None:
        """Record ``config`` as the best for (``template``, ``workload``); ``extra`` (e.g. time_ms) is kept."""
        entry = {"template": template, "workload": dict(workload), "config": dict(config), **extra}
        self.entries.setdefault(template, {})[workload_signature(workload)] = entry


def _lent(entry: dict[str, Any]) -> str:
    return f" via {entry[LENDER]}" if LENDER in entry else ""


def with_lent_entries(own: ConfigTable, lender: ConfigTable, name: str) -> ConfigTable:
    """``own`` completed by ``lender``'s entries, per workload: an exact entry of ``own`` first, then an exact entry
    of ``lender`` (its source ending in ``via <name>``), then the nearest workload of either; templates neither
    has go to ``own``'s fallback, else ``lender``'s. The CUDA backend lends the same GPU's OpenCL table this way, so
    that a CUDA table tuned for a few workloads does not turn the OpenCL table's exact entries into nearest ones."""
    merged = ConfigTable(own.backend, own.device_key, path=own.path, family=own.family, isa=own.isa,
                         fallback=own.fallback or lender.fallback)  # fmt: skip
    merged.entries = {template: dict(per) for template, per in own.entries.items()}
    for template, per in lender.entries.items():
        for signature, entry in per.items():
            merged.entries.setdefault(template, {}).setdefault(signature, {**entry, LENDER: name})
    return merged


def workload_distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Distance between two workloads of one template: infinite if a non-numeric field differs."""
    distance = 0.0
    for key in set(a) | set(b):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            distance += (math.log2(max(va, 1)) - math.log2(max(vb, 1))) ** 2
        elif va != vb:
            return math.inf
    return math.sqrt(distance)


def table_path(backend: str, device_key: str) -> Path:
    return data_dir("tuned_configs") / backend / f"{device_key}.json"


def load_table(backend: str, device_key: str, family: str = "", isa: str = "") -> ConfigTable:
    """The table of ``device_key``: the user's (``edgeinfer tune``) over the shipped one, its missing templates
    borrowed from ``family`` (a sibling of ISA class ``isa`` first); else the most similar table of ``family``
    (borrowed); else an empty one. Also empty if ``EDGEINFER_TUNED_CONFIGS=off`` (benchmarks use it to measure
    the defaults)."""
    if os.environ.get("EDGEINFER_TUNED_CONFIGS", "").lower() == "off":
        return ConfigTable(backend, device_key, family=family, isa=isa)
    shipped = _shipped_table(backend, device_key, family, isa)
    user_path = user_tables_dir() / backend / f"{device_key}.json"
    if not user_path.is_file():
        return shipped
    user = read_table(user_path, backend, device_key)
    merged = ConfigTable(backend, device_key, path=user_path, family=family, isa=isa, fallback=shipped.fallback)
    merged.entries = {template: dict(per) for template, per in shipped.entries.items()}
    for template, per in user.entries.items():
        for signature, entry in per.items():
            merged.entries.setdefault(template, {})[signature] = {**entry, "table": USER_TABLE}
    return merged


@cache
def _shipped_table(backend: str, device_key: str, family: str, isa: str = "") -> ConfigTable:
    """Cached: the shipped tables are read-only at run time."""
    try:
        path = table_path(backend, device_key)
    except FileNotFoundError:
        return ConfigTable(backend, device_key, family=family, isa=isa)
    table = read_table(path, backend, device_key)  # empty where the device has no table of its own
    table.isa = isa or table.isa
    table.fallback = _family_table(path.parent, device_key, family, table.isa) if family else None
    return table


def _family_table(directory: Path, device_key: str, family: str, isa: str = "") -> ConfigTable | None:
    """The shipped table of ``family`` most like ``device_key``, other than its own: one of ISA class ``isa``
    first, then the one sharing most words with the key."""
    others = sorted(p for p in directory.glob("*.json") if p.stem != device_key)
    siblings = [t for t in map(_read_shipped, others) if t.family == family]
    if not siblings:
        return None
    return max(
        siblings,
        key=lambda t: (t.isa == isa, key_similarity(device_key, t.device_key), len(t.entries), t.device_key),
    )


def family_tables(backend: str, family: str) -> list[ConfigTable]:
    """Every shipped table of ``family`` (the tuner's cost model learns from their measured times)."""
    try:
        directory = data_dir("tuned_configs") / backend
    except FileNotFoundError:
        return []
    return [t for t in map(_read_shipped, sorted(directory.glob("*.json"))) if t.family == family]


def _read_shipped(path: Path) -> ConfigTable:
    data = json.loads(path.read_text())
    return read_table(path, data.get("backend", path.parent.name), data.get("device_key", path.stem))


def key_similarity(a: str, b: str) -> int:
    """Words two device keys share (``genuineintel``, ``skylake``, ``avx512``, ...): ranks a family's tables."""
    return len(set(a.split("-")) & set(b.split("-")))


def read_table(path: Path, backend: str, device_key: str) -> ConfigTable:
    table = ConfigTable(backend, device_key, path=path)
    if not path.is_file():
        return table
    data = json.loads(path.read_text())
    if data.get("format") != TABLE_FORMAT_VERSION:
        raise ValueError(f"{path}: tuned-config format {data.get('format')!r}, expected {TABLE_FORMAT_VERSION}")
    table.family = data.get("family", "")
    table.isa = data.get("isa") or table_isa(device_key, table.family)
    for entry in data["entries"]:
        extra = {k: v for k, v in entry.items() if k not in ("template", "workload", "config")}
        table.add(entry["template"], entry["workload"], entry["config"], **extra)
    return table


def table_isa(device_key: str, family: str) -> str:
    """The ISA class of a table that does not record one: GPUs "simt"; CPUs from the LLVM CPU in the key."""
    if not family.endswith("-cpu"):
        return "simt"
    return isa_of_llvm_cpu(device_key).name


def write_table(table: ConfigTable, path: Path) -> None:
    """Write ``table`` atomically (a reader, or a tuner interrupted mid-write, never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{k: v for k, v in e.items() if k != "table"} for e in table.to_json()["entries"] if LENDER not in e]
    text = json.dumps({**table.to_json(), "entries": entries}, indent=1, sort_keys=True) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
