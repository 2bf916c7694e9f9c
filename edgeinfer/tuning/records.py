"""The tuning log: every measurement of every run, one JSON object per line, so that a rerun resumes where the
last stopped and the cost model learns from all of them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeinfer.tuned_configs import workload_signature


def config_key(config: dict[str, Any]) -> str:
    """Canonical text of a config (identity of a candidate)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


@dataclass
class Record:
    """One measured (template, workload, config) on one device; ``ms`` None marks an invalid config."""

    template: str
    workload: dict[str, Any]
    config: dict[str, Any]
    ms: float | None
    device_key: str
    error: str = ""
    driver: str = ""
    date: str = ""
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task_key(self) -> str:
        return f"{self.template}:{workload_signature(self.workload)}"

    @property
    def valid(self) -> bool:
        return self.ms is not None


class RecordLog:
    """Append-only JSON-lines file of :class:`Record` (a torn last line, from a killed run, is skipped)."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[Record] = self._read() if path.is_file() else []

    def _read(self) -> list[Record]:
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
                records.append(Record(**data))
            except (ValueError, TypeError):
                continue
        return records

    def append(self, record: Record) -> None:
        self.records.append(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def of_task(self, task_key: str, device_key: str) -> list[Record]:
        return [r for r in self.records if r.task_key == task_key and r.device_key == device_key]
