"""The device a tuning run plans for and measures on, one class per API: ``select_target("opencl:0:0")`` or
``select_target("cuda:0")``. Everything the tuner does through the API goes through these few methods (the
graph's layout, the planning context, the table Session would use, preparing a node with a forced config, the
API's errors), so workload collection, search, checking and timing are one code path for both APIs. pyopencl
and CuPy are imported only by the target that needs them."""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from edgeinfer.backends.base import DeviceInfo, Executable
from edgeinfer.ir import Graph
from edgeinfer.planning.context import PlanContext
from edgeinfer.tuned_configs import ConfigTable


class TuningTarget(ABC):
    """One device of one API, as the tuner sees it."""

    api: str  # the backend name, also the tables' directory: tuned_configs/<api>/<device key>.json
    info: DeviceInfo
    # What preparing or running a bad config raises (beyond NoKernel, RuntimeError, ValueError, MemoryError):
    # recorded as the config's error, never a crash.
    errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def device_graph(self, graph: Graph) -> Graph:
        """``graph`` in the layout the executor plans it in on this device."""

    @abstractmethod
    def plan_context(self, graph: Graph, table: ConfigTable | None = None) -> PlanContext:
        """The planning context of ``graph`` (in the device's layout); ``table``: the device's table unless given."""

    @abstractmethod
    def config_table(self) -> ConfigTable:
        """The table Session takes this device's configs from (user's, shipped, borrowed)."""

    @abstractmethod
    def prepare(self, graph: Graph, overrides: dict[str, dict[str, Any]]) -> Executable:
        """``graph`` prepared on the device with ``overrides`` forcing configs (the API's errors propagate)."""

    def quiet(self) -> contextlib.AbstractContextManager:
        """Around prepare: keep the compiler's output off the terminal (the tuner has its own progress bar)."""
        return contextlib.nullcontext()

    def lent_config(self, template: str, workload: dict[str, Any]) -> dict[str, Any] | None:
        """The config the device runs for exactly this workload today from a table lent to it, or None (then only
        the table being tuned and the heuristic default compete with the candidates)."""
        return None

    def ran_another_block(self, executable: Executable) -> str:
        """Why ``executable`` does not run the config as given (a block the compiled kernel cannot run, shrunk
        at launch), or ""."""
        return ""

    def compile_ahead(self, graph: Graph, template: str, configs: list[dict[str, Any]]) -> None:
        """Build the programs of ``configs`` (applied to ``graph``'s node) ahead, in parallel, where the API's
        compiler allows; failures are left for the measurement to record. By default nothing: each config is
        built when it is measured."""
        return None

    @property
    def driver(self) -> str:
        """The driver (and compiler) version, as records and table entries keep it."""
        return str(self.info.details.get("driver_version", ""))


class OpenCLTarget(TuningTarget):
    api = "opencl"

    def __init__(self, spec: str):
        import pyopencl as cl

        from edgeinfer.backends.opencl.runtime import select_device

        self.spec = spec
        self.device = select_device(spec)
        self.info = self.device.info
        self.errors = (cl.Error,)

    def device_graph(self, graph: Graph) -> Graph:
        from edgeinfer.backends.opencl.plans import device_graph

        return device_graph(graph, self.device)

    def plan_context(self, graph: Graph, table: ConfigTable | None = None) -> PlanContext:
        from edgeinfer.backends.opencl.plans import plan_context

        return plan_context(graph, self.device, table)

    def config_table(self) -> ConfigTable:
        from edgeinfer.tuned_configs import load_table

        return load_table("opencl", self.info.device_key, self.info.family, self.info.isa)

    def prepare(self, graph: Graph, overrides: dict[str, dict[str, Any]]) -> Executable:
        from edgeinfer.backends import opencl

        return opencl.prepare(graph, self.spec, overrides=overrides)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        from edgeinfer.backends.opencl import program_cache

        with program_cache.progress_silenced():  # program_cache also captures the compiler's output
            yield


class CudaTarget(TuningTarget):
    """A CUDA device: the executor of a one-node graph, timed with CUDA events (its ``profile``). A config that
    NVRTC rejects (DeviceError), whose block the compiled kernel cannot run (shrunk at launch) or whose grid CUDA
    cannot launch (the node goes to the host) is invalid."""

    api = "cuda"

    def __init__(self, spec: str):
        from edgeinfer.backends.cuda.runtime import select_device
        from edgeinfer.errors import DeviceError

        self.info = select_device(spec)
        self.errors = (DeviceError,)  # NVRTC errors (program_cache); CuPy's CUDA errors are RuntimeErrors
        self._table: ConfigTable | None = None  # config_table(), read once for lent_config

    def device_graph(self, graph: Graph) -> Graph:
        from edgeinfer.backends.cuda.plans import device_graph

        return device_graph(graph)

    def plan_context(self, graph: Graph, table: ConfigTable | None = None) -> PlanContext:
        from edgeinfer.backends.cuda.plans import plan_context

        return plan_context(graph, self.info, table)

    def config_table(self) -> ConfigTable:
        from edgeinfer.backends.cuda.runtime import config_table

        return config_table(self.info)

    def prepare(self, graph: Graph, overrides: dict[str, dict[str, Any]]) -> Executable:
        from edgeinfer.backends.cuda.executor import CudaExecutable  # imports cupy

        return CudaExecutable(graph, self.info, overrides)

    def lent_config(self, template: str, workload: dict[str, Any]) -> dict[str, Any] | None:
        """The same GPU's OpenCL config for the workload, which CUDA runs until its own table has the workload: it
        competes with the candidates, so a CUDA entry is never slower than the config it replaces."""
        from edgeinfer.tuned_configs import LENDER, workload_signature

        if self._table is None:
            self._table = self.config_table()
        entry = self._table.entries.get(template, {}).get(workload_signature(workload))
        return dict(entry["config"]) if entry is not None and LENDER in entry else None

    def ran_another_block(self, executable: Executable) -> str:
        for kernel, wanted, used, limit in getattr(executable, "local_fits", []):
            return f"block {list(wanted)} exceeds {kernel}'s limit of {limit} threads (would run as {list(used)})"
        return ""

    def compile_ahead(self, graph: Graph, template: str, configs: list[dict[str, Any]]) -> None:
        """NVRTC compiles one program per thread (it releases the GIL): a batch of configs costs about one
        compile instead of one each."""
        from concurrent.futures import ThreadPoolExecutor

        from edgeinfer.backends.cuda import program_cache
        from edgeinfer.backends.cuda.plans import plan_context
        from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS, program_source
        from edgeinfer.planning import plan_node
        from edgeinfer.planning.plan import Launch

        # Only a speed-up: whatever fails here (a config the planner refuses, a program NVRTC rejects) fails again
        # in measure(), which records why.
        sources = set()
        for config in configs:
            ctx = plan_context(graph, self.info, ConfigTable(self.api, self.info.device_key), {template: config})
            try:
                plan = plan_node(graph.nodes[0], ctx)
            except Exception:  # noqa: BLE001 - see above
                continue
            sources |= {program_source(launch.template, launch.defines) for launch in plan.launches
                        if isinstance(launch, Launch)}  # fmt: skip

        def build(source: str) -> None:
            try:
                program_cache.compile_ahead([source], NVRTC_OPTIONS, self.info)
            except Exception:  # noqa: BLE001 - see above
                pass

        if sources:
            with ThreadPoolExecutor(max_workers=min(len(sources), os.cpu_count() or 1)) as pool:
                list(pool.map(build, sorted(sources)))

    @property
    def driver(self) -> str:
        details = self.info.details
        version = int(details.get("driver_version") or 0)
        return f"CUDA {version // 1000}.{version % 1000 // 10} driver, NVRTC {details.get('nvrtc_version', '?')}"


def select_target(device: str) -> TuningTarget:
    """The tuning target of a device spec: ``cuda``/``cuda:N`` a CUDA device, anything else an OpenCL one."""
    if device == "cuda" or device.startswith("cuda:"):
        return CudaTarget(device)
    return OpenCLTarget(device)
