"""``Session``: load a pack once, run it many times."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.backends import NUMPY_BACKEND, get_backend, resolve_device
from edgeinfer.background_build import (
    BackgroundBuild,
    load_or_build_in_background,
    programs_without_binary,
    store_binaries_later,
)
from edgeinfer.errors import InputError
from edgeinfer.ir import Graph
from edgeinfer.pack import read_pack


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.name} [{'x'.join(map(str, self.shape))}] {self.dtype}"


class Session:
    """A compiled model (``.pack``) prepared on one device.

    ``device`` is ``"auto"`` (a GPU if one is usable, then other OpenCL devices, then NumPy), ``"cpu"``
    (the NumPy backend, with its native kernels where they are built), ``"cpu:numpy"`` (pure NumPy),
    ``"opencl"`` or ``"opencl:<platform>:<device>"``. With ``"auto"`` the environment variable
    ``EDGEINFER_DEVICE`` overrides the choice. When ``"auto"`` picks an OpenCL device whose programs for this pack
    are not all cached (a first run there), the Session answers from NumPy at once while they build in the
    background, then switches to OpenCL at a run boundary (``backend_status``, ``wait_until_ready``;
    docs/program-cache.md). An explicit device always loads there, blocking until it has built.
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        self.path = Path(path)
        self.graph: Graph = read_pack(self.path)
        if device == "auto":
            device = os.environ.get("EDGEINFER_DEVICE", "auto") or "auto"
        backend, self.device = resolve_device(device)
        without_binary = programs_without_binary()
        executable, self._background = None, None
        if device == "auto":
            executable, self._background = load_or_build_in_background(self.path, self.graph, backend, self.device)
        if self._background is not None:  # serve from NumPy until the OpenCL build is done
            backend, self.device = get_backend(NUMPY_BACKEND), NUMPY_BACKEND
        self.backend: str = backend.NAME
        self._executable = executable if executable is not None else backend.prepare(self.graph, self.device)
        tensors = self.graph.tensors
        self.inputs = [TensorSpec(n, tensors[n].shape, tensors[n].dtype) for n in self.graph.inputs]
        self.outputs = [TensorSpec(n, tensors[n].shape, tensors[n].dtype) for n in self.graph.outputs]
        self.pipeline: dict[str, Any] | None = self.graph.metadata.get("pipeline")
        self.labels: list[str] = list(self.graph.metadata.get("labels") or [])
        # On a device with pre-processing kernels (OpenCL, CUDA), images are pre-processed there (bit-equal to PIL's)
        self._device_preprocessor = self._executable.device_preprocessor(self.pipeline) if self.pipeline else None
        if self._background is None and programs_without_binary() > without_binary:
            store_binaries_later(self.path, self.device)  # PoCL, markers only: a niced child stores the binaries
        # A backend's prepared state (OpenCL buffers bound to kernels, the input/output arena) serves one run
        # at a time: calls from several threads on one Session take turns (README, "Threads").
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, device={self.device!r})"

    def run(self, data: Any) -> Any:
        """Run the model.

        - ``run({name: array, ...})`` returns ``{output name: array}`` (raw tensors).
        - ``run(array)`` with an array that matches the single model input's shape and dtype does the same.
        - ``run(img)`` on a pack with a pipeline takes an HxWx3 uint8 RGB array, an image path or a PIL
          image, pre-processes it as the model expects and returns top-k ``(label, score)`` pairs for a
          classifier or ``Detections`` in original-image pixels for a detector.
        """
        with self._lock:
            self._switch_if_built()
            return self._run(data)

    @property
    def backend_status(self) -> str:
        """What serves the runs: the backend name ("opencl", "cpu"), or while a background build is on or after it
        failed, e.g. "cpu (NumPy) while OpenCL builds for opencl:0:0 (3 of 19 programs cached)"."""
        build = self._background
        return build.describe() if build is not None else self.backend

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Wait for a background OpenCL build and switch to it (on success). True when none is pending any more
        (there was none, it finished, or it failed: ``backend_status`` says why); False if ``timeout`` passed."""
        build = self._background
        if build is not None and not build.wait(timeout):
            return False
        with self._lock:
            self._switch_if_built()
        return True

    def detach_background_build(self) -> bool:
        """Let a background OpenCL build go on after this Session and this process end, so that a one-shot program
        (``edgeinfer run``) exits with its answer and the next load finds the programs built. True if a build was
        still running; this Session then stays on NumPy."""
        build = self._background
        return build is not None and not build.done() and build.detach()

    def close(self) -> None:
        """Stop a background build (the cache keeps the programs that finished) and free the device objects now;
        the Session cannot run afterwards."""
        with self._lock:
            if self._background is not None:
                self._background.cancel()
            self._executable.close()

    def __del__(self) -> None:
        build: BackgroundBuild | None = getattr(self, "_background", None)
        if build is not None:
            build.cancel()

    def _switch_if_built(self) -> None:
        """At a run boundary, under the lock: serve from the OpenCL executable a background build prepared."""
        build = self._background
        if build is None or build.prepared is None:
            return  # none, building, or failed (then the build keeps the reason for backend_status)
        self._executable.close()
        self._executable, self._device_preprocessor = build.prepared.executable, build.prepared.preprocessor
        self.backend, self.device, self._background = build.backend, build.device, None

    def _run(self, data: Any) -> Any:
        if isinstance(data, dict):
            return self._run_raw(data)
        if isinstance(data, np.ndarray) and len(self.inputs) == 1:
            spec = self.inputs[0]
            if data.shape == spec.shape and data.dtype == np.dtype(spec.dtype):
                return self._run_raw({spec.name: data})
            if data.shape == spec.shape:
                raise InputError(
                    f"input {spec.name!r} is a tensor of the right shape {list(data.shape)} but dtype {data.dtype}; "
                    f"expected {spec.dtype}"
                )
            if self.pipeline is not None and data.ndim != 3:  # an HxWx3 image is 3-D: anything else is a tensor
                raise InputError(
                    f"input {spec.name!r} got {_describe(data)}; expected the tensor {spec} or an HxWx3 uint8 RGB image"
                )
        if self.pipeline is None:
            raise InputError(
                f"this pack has no image pipeline, so run() needs a dict of input arrays: expected "
                f"{', '.join(map(str, self.inputs))}; got {_describe(data)} (compile with --preset or --pipeline "
                "to run images)"
            )
        name = self.pipeline["input"]
        buffer = self._executable.device_input(name) if self._device_preprocessor is not None else None
        if buffer is not None:  # pre-process straight into the model's input buffer: no host round trip
            _, context = self._device_preprocessor.run(self._frame(data), out=buffer)
            outputs = self._executable.run({}, filled_on_device=frozenset({name}))
        else:
            tensor, context = self.preprocess(data)
            outputs = self._run_raw({name: tensor})
        return self.postprocess(outputs, context)

    def preprocess(self, image: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """The network input for ``image`` and the context that maps boxes back to the original image."""
        from edgeinfer.pipelines.preprocess import prepare_input

        if self._device_preprocessor is None:
            return prepare_input(image, self.pipeline)
        with self._lock:
            return self._device_preprocessor.run(self._frame(image))

    @staticmethod
    def _frame(image: Any) -> np.ndarray:
        """An HxWx3 uint8 RGB array from an array, a path or a PIL image."""
        from edgeinfer.pipelines.preprocess import check_image_array, load_image

        return check_image_array(image) if isinstance(image, np.ndarray) else np.asarray(load_image(image))

    def postprocess(self, outputs: dict[str, np.ndarray], context: dict[str, Any]) -> Any:
        """Top-k labels (classifier) or Detections in original-image pixels (detector)."""
        from edgeinfer.pipelines.postprocess import finish

        return finish(outputs, self.pipeline, self.labels, context)

    def _run_raw(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        with self._lock:
            return self._executable.run(feeds)

    def check_feeds(self, feeds: dict[str, Any]) -> None:
        """Raise :class:`InputError` (a ``ValueError``) saying expected versus got for a wrong name, shape or dtype."""
        expected = {s.name: s for s in self.inputs}
        unknown = [name for name in feeds if name not in expected]
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; expected inputs: {', '.join(map(str, self.inputs))}")
        missing = [name for name in expected if name not in feeds]
        if missing:
            raise InputError(f"missing input {expected[missing[0]]}; got only {sorted(feeds)}")
        for name, value in feeds.items():
            spec = expected[name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array {spec}; got {type(value).__name__}")
            if value.dtype != np.dtype(spec.dtype):
                raise InputError(f"input {name!r} has dtype {value.dtype}; expected {spec.dtype}")
            if value.shape != spec.shape:
                raise InputError(f"input {name!r} has shape {list(value.shape)}; expected {list(spec.shape)}")

    def explain(self) -> list[dict[str, Any]]:
        """Per node: placement, kernel, config and where the config came from."""
        return self._executable.explain()

    def profile(self, feeds: dict[str, np.ndarray], repeat: int = 10) -> list[dict[str, Any]]:
        """Per-node times: OpenCL profiling events on OpenCL, wall time per node on NumPy."""
        self.check_feeds(feeds)
        with self._lock:
            self._switch_if_built()
            return self._executable.profile(feeds, repeat=repeat)


def _describe(data: Any) -> str:
    if isinstance(data, np.ndarray):
        return f"an array of shape {list(data.shape)} and dtype {data.dtype}"
    return type(data).__name__
