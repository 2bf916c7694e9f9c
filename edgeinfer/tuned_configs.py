"""Tuned kernel-config tables: ``tuned_configs/<backend>/<device-key>.json`` (format: docs/tuned-configs.md).

A table maps (kernel template, workload signature) to the config measured fastest on one device. A lookup
that misses takes the config of the nearest tuned workload of the same template (distance in log space over
the workload's numeric fields), then the caller's heuristic default, and says which one it used.

A device without a table of its own borrows the table of the most similar device of its *family* (same
platform, same device kind: e.g. PoCL on any x86 CPU), because a table tuned on a sibling device beats the
heuristic defaults; a device whose own table lacks a template borrows that template the same way. Every
config source from a borrowed table ends in ``via <that table's key>``.
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

PACKAGE_DIR = Path(__file__).resolve().parent
TABLE_FORMAT_VERSION = 1

# Where a config came from, as shown by Session.explain().
TUNED, NEAREST, DEFAULT = "tuned", "nearest", "default"


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
    fallback: ConfigTable | None = None  # a sibling's table, for the templates this one has no entries of

    def lookup(
        self, template: str, workload: dict[str, Any], default: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        """Config for ``template`` on ``workload`` and its source: tuned, nearest or default."""
        if template not in self.entries and self.fallback is not None:
            config, source = self.fallback.lookup(template, workload, default)
            return config, source if source == DEFAULT else f"{source} via {self.fallback.device_key}"
        tuned = self.entries.get(template, {})
        signature = workload_signature(workload)
        if signature in tuned:
            return dict(tuned[signature]["config"]), TUNED
        best, best_distance = None, math.inf
        for entry in tuned.values():
            distance = workload_distance(workload, entry["workload"])
            if distance < best_distance:
                best, best_distance = entry, distance
        if best is not None:
            return dict(best["config"]), f"{NEAREST} ({workload_signature(best['workload'])})"
        return default(), DEFAULT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT_VERSION,
            "backend": self.backend,
            "device_key": self.device_key,
            "family": self.family,
            "entries": [entry for per_template in self.entries.values() for entry in per_template.values()],
        }

    def add(self, template: str, workload: dict[str, Any], config: dict[str, Any], **extra: Any) -> None:
        """Record ``config`` as the best for (``template``, ``workload``); ``extra`` (e.g. time_ms) is kept."""
        entry = {"template": template, "workload": dict(workload), "config": dict(config), **extra}
        self.entries.setdefault(template, {})[workload_signature(workload)] = entry


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


def load_table(backend: str, device_key: str, family: str = "") -> ConfigTable:
    """The table of ``device_key`` (its missing templates borrowed from ``family``); else the table of the most
    similar device of ``family`` (borrowed); else an empty one. Also empty if ``EDGEINFER_TUNED_CONFIGS=off``
    (benchmarks use it to measure the defaults)."""
    if os.environ.get("EDGEINFER_TUNED_CONFIGS", "").lower() == "off":
        return ConfigTable(backend, device_key, family=family)
    return _shipped_table(backend, device_key, family)


@cache
def _shipped_table(backend: str, device_key: str, family: str) -> ConfigTable:
    """Cached: the shipped tables are read-only at run time."""
    try:
        path = table_path(backend, device_key)
    except FileNotFoundError:
        return ConfigTable(backend, device_key, family=family)
    table = read_table(path, backend, device_key)  # empty where the device has no table of its own
    table.fallback = _family_table(path.parent, device_key, family) if family else None
    return table


def _family_table(directory: Path, device_key: str, family: str) -> ConfigTable | None:
    """The shipped table of ``family`` most similar to ``device_key``, other than its own."""
    others = sorted(p for p in directory.glob("*.json") if p.stem != device_key)
    siblings = [t for t in map(_read_shipped, others) if t.family == family]
    if not siblings:
        return None
    return max(siblings, key=lambda t: (key_similarity(device_key, t.device_key), len(t.entries), t.device_key))


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
    for entry in data["entries"]:
        extra = {k: v for k, v in entry.items() if k not in ("template", "workload", "config")}
        table.add(entry["template"], entry["workload"], entry["config"], **extra)
    return table


def write_table(table: ConfigTable, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table.to_json(), indent=1, sort_keys=True) + "\n")
