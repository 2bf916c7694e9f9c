"""The interface every backend implements.

A backend module exposes ``NAME`` (the device name users pass to ``Session``), ``list_devices()`` and
``prepare(graph, device)``. ``prepare`` does all per-model work once (build programs, allocate the
arena, bind arguments) and returns an :class:`Executable` whose ``run`` only moves data and launches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgeinfer.ir import Graph


@dataclass
class DeviceInfo:
    """One device a backend can run on, as shown by ``edgeinfer devices``."""

    backend: str  # "cpu", "opencl", ...
    spec: str  # what Session(device=...) accepts, e.g. "opencl:0:0"
    name: str
    kind: str  # "gpu", "cpu", "accelerator"
    device_key: str = ""  # key of tuned_configs/<backend>/<device_key>.json
    family: str = ""  # devices of one family may borrow each other's tuned tables (tuned_configs.load_table)
    isa: str = ""  # CPU devices: the vector ISA class the kernels are built for (cpu_isa.py); "simt" on GPUs
    usable: bool = True
    reason: str = ""  # why it is not usable
    details: dict[str, Any] = field(default_factory=dict)


class Executable(Protocol):
    """A graph prepared for one device."""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on ``feeds`` (already validated) and return every graph output."""
        ...

    def explain(self) -> list[dict[str, Any]]:
        """Per node: ``name``, ``op``, ``placement``, ``kernel``, ``config``, ``config_source``."""
        ...


class Backend(Protocol):
    NAME: str

    def list_devices(self) -> list[DeviceInfo]: ...

    def prepare(self, graph: Graph, device: str | None = None) -> Executable: ...
