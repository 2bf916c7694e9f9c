"""Measuring one config of one tuning task: build the node alone, check it, time it with device timers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.ir import Graph, Node
from edgeinfer.planning import NoKernel, layout
from edgeinfer.tuning.targets import TuningTarget
from edgeinfer.tuning.workloads import TuningTask

# Outputs within this relative L2 error of the NumPy reference count as correct (fp32 sums in another order).
MAX_REL_L2 = 1e-4
HOST_ROWS = ("(read outputs)", "(write inputs)")
REPLACED = "planner replaced it: "  # then the source of the config the node ran instead


@dataclass
class Measurement:
    """The median kernel time of one config, or why the config is invalid (``ms`` None)."""

    ms: float | None
    error: str = ""

    @property
    def valid(self) -> bool:
        return self.ms is not None


def untried(error: str) -> bool:
    """Whether a measurement's ``error`` says the planner set the config aside without trying it: the node was
    planned through another template, or took a table's config. That depends on the planning rules and tables of the
    run, not on the config (session 10's GPU planned a 1x1 conv through gemm where the lent OpenCL table had it as a
    gemm, leaving the conv2d override unused), so such a record is no trial of the config. A fallback the planner
    explains, ``default (why)``, is the config's own fault."""
    return error.startswith(REPLACED) and not error.startswith(REPLACED + "default (")


class Measurer:
    """Times configs of tuning tasks on one device: ``warmup`` runs, then the median of ``repeat`` runs timed by
    the executable's ``profile`` with the API's device timers (OpenCL profiling events, CUDA events; kernel time
    only: the node's inputs stay on the device)."""

    def __init__(self, target: TuningTarget, repeat: int = 10, warmup: int = 2):
        self.target, self.repeat, self.warmup = target, repeat, warmup
        self._references: dict[str, dict[str, np.ndarray]] = {}

    def measure(self, task: TuningTask, config: dict[str, Any]) -> Measurement:
        executable = None
        try:
            with self.target.quiet():
                executable = self.target.prepare(task.graph, {task.template: config})
            row = executable.explain()[0]
            if row["placement"] != "device":
                return Measurement(None, f"planner refused it: {row['config_source']}")
            if row["kernel"] != task.template:  # the override went unused: the node took another template's config
                return Measurement(None, f"{REPLACED}planned as {row['kernel']}, not {task.template} "
                                         f"({row['config_source']})")  # fmt: skip
            if row["config_source"] != "override":  # the planner ran another config (e.g. a device limit)
                return Measurement(None, f"{REPLACED}{row['config_source']}")
            other_block = self.target.ran_another_block(executable)
            if other_block:
                return Measurement(None, other_block)
            outputs = executable.run(task.feeds)
            wrong = self._check(task, outputs)
            if wrong:
                return Measurement(None, wrong)
            for _ in range(self.warmup):
                executable.run(task.feeds)
            rows = executable.profile(task.feeds, repeat=self.repeat)
            return Measurement(sum(r["time_ms"] for r in rows if r["name"] not in HOST_ROWS))
        except (*self.target.errors, NoKernel, RuntimeError, ValueError, MemoryError) as e:
            first = " ".join(str(e).split())[:240]
            return Measurement(None, f"{type(e).__name__}: {first}")
        finally:
            if executable is not None:
                executable.close()

    def reference(self, task: TuningTask) -> dict[str, np.ndarray]:
        """The node's outputs computed by the NumPy backend (cached per task)."""
        if task.key not in self._references:
            env: dict[str, np.ndarray] = dict(task.graph.constants)
            env.update(task.feeds)
            for node in task.graph.nodes:
                layout.run_host(node, env)
            self._references[task.key] = {name: env[name] for name in task.graph.outputs}
        return self._references[task.key]

    def _check(self, task: TuningTask, outputs: dict[str, np.ndarray]) -> str:
        """Why ``outputs`` are wrong ("" if they match the reference)."""
        node = task.graph.nodes[0]
        for name, expected in self.reference(task).items():
            got = _real_channels(node, task.graph, outputs[name])
            want = _real_channels(node, task.graph, expected)
            if got.shape != want.shape or not np.all(np.isfinite(got)):
                return f"output {name}: shape {got.shape} or non-finite values, expected {want.shape}"
            error = float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-12))
            if error > MAX_REL_L2:
                return f"output {name} differs from the NumPy reference: rel L2 {error:.2e} > {MAX_REL_L2:g}"
        return ""


def _real_channels(node: Node, graph: Graph, array: np.ndarray) -> np.ndarray:
    """A channel-blocked output without its padding lanes (which hold act(0), not the reference's zeros)."""
    if array.ndim != 5:
        return array
    weights = graph.constants[node.inputs[3] if node.op == layout.SEPARABLE else node.inputs[1]]
    return layout.from_blocked(array, int(weights.shape[0]))
