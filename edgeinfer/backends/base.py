"""The interface every backend implements.

A backend module exposes ``NAME`` (the device name users pass to ``Session``), ``list_devices()`` and
``prepare(graph, device)``. ``prepare`` does all per-model work once (build programs, allocate the
arena, bind arguments) and returns an :class:`Executable` whose ``run`` only moves data and launches.
``Session`` uses nothing of a backend but this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class Executable(ABC):
    """A graph prepared for one device: what ``Session`` calls. Every backend's executable subclasses it;
    ``run``, ``explain`` and ``profile`` it must implement, the rest defaults to a backend whose tensors live in
    host memory (no device-side input buffers, no device pre-processing, nothing to free)."""

    @abstractmethod
    def run(
        self, feeds: dict[str, np.ndarray], filled_on_device: frozenset[str] = frozenset()
    ) -> dict[str, np.ndarray]:
        """Run the graph on ``feeds`` (already validated) and return every graph output. The inputs named in
        ``filled_on_device`` are not in ``feeds``: work queued on the device filled their :meth:`device_input`."""

    @abstractmethod
    def explain(self) -> list[dict[str, Any]]:
        """Per node: ``name``, ``op``, ``placement``, ``kernel``, ``config``, ``config_source``."""

    @abstractmethod
    def profile(self, feeds: dict[str, np.ndarray], repeat: int = 10) -> list[dict[str, Any]]:
        """Per node: its median time over ``repeat`` runs of ``feeds`` (``time_ms``) and what it achieved."""

    def device_input(self, name: str) -> Any | None:
        """The device buffer of graph input ``name`` that device work may fill before ``run(...,
        filled_on_device={name})``, or None where the input must come from the host."""
        return None

    def device_preprocessor(self, pipeline: dict[str, Any]) -> Any | None:
        """An image pre-processor that runs ``pipeline`` on this executable's device and can write into a
        :meth:`device_input` (its ``run(frame, out=None)`` returns ``(tensor or buffer, context)`` as
        ``pipelines.preprocess.prepare_input`` does), or None: pre-processing runs on the host."""
        return None

    def close(self) -> None:
        """Free the device objects now; the executable cannot run afterwards."""
        return None  # host memory is freed with the executable


class Backend(Protocol):
    NAME: str

    def list_devices(self) -> list[DeviceInfo]: ...

    def prepare(self, graph: Graph, device: str | None = None) -> Executable: ...
