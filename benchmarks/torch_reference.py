"""PyTorch references for gpu_compare.py (issue 16): the same ONNX models converted with onnx2torch, timed eager and
replayed from a CUDA graph, each checked against onnxruntime (rel L2 <= 1e-4) before its time counts. TF32 off.

The CUDA graph is captured from the first of these candidates that works (its name goes into the table):

- ``module``: the onnx2torch module itself. Its Reshape, Resize, Slice, Shape, ... modules read their shape operands
  with ``.item()``/``.tolist()`` or build ``torch.tensor`` from host values while running: on a GPU a device sync or
  a pageable host copy, which a capture cannot hold (session 9: every shared model failed so).
- ``traced``: ``torch.jit.trace`` then ``torch.jit.freeze``: the shape values become constants of the graph (freeze
  also folds BatchNorm into Conv), so nothing reads the device while it runs. Run with the JIT executor's
  optimisations off: its profiling would otherwise compile fused kernels on a later call, perhaps inside the capture.

Before a capture, ``host_syncs`` runs the candidate once and lists what would make the host wait or copy; such a
candidate is skipped with that reason while another is left (the last is captured anyway: the capture is the judge).
``torch.compile`` is not a candidate: on torch 2.11 Dynamo fails on onnx2torch's Reshape (``torch.Size`` of traced
tensors). torch, onnx and onnx2torch import only when called (the machine may lack them).
"""

from __future__ import annotations

import collections
import statistics
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import median_ms, rel_l2, short_error

TOLERANCE = 1e-4
RESNET50 = "resnet50_random"


def onnx_for_torch(model: Path):
    """``model`` as onnx2torch converts it: below opset 13 (SqueezeNet's 7, YOLOX's 11, ...) upgraded with ONNX's
    version converter (onnx2torch converts few old op versions), and unread Dropout masks removed: onnx2torch's
    Dropout returns one tensor, which the converted graph then indexes as the pair (output, mask), so ``[0]`` took
    the batch row and SqueezeNet's GlobalAveragePool failed on a 3-d tensor."""
    import onnx
    from onnx import version_converter

    proto = onnx.load(str(model))
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset < 13:
        proto = version_converter.convert_version(proto, 13)
    read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        if node.op_type == "Dropout" and len(node.output) > 1 and not read.intersection(node.output[1:]):
            del node.output[1:]
    return proto


def torch_module(model: Path):
    """The model on the GPU in eval mode: onnx2torch's conversion, or for ResNet-50 torchvision's module itself."""
    import onnx2torch
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if model.stem == RESNET50:
        return resnet50_module().cuda().eval()
    return onnx2torch.convert(onnx_for_torch(model)).cuda().eval()


def resnet50_module():
    """torchvision's ResNet-50 with seeded random weights (no download)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def resnet50_onnx(directory: Path) -> Path:
    """``resnet50_module`` exported to ONNX (opset 17)."""
    import torch

    path = directory / f"{RESNET50}.onnx"
    torch.onnx.export(resnet50_module(), (torch.randn(1, 3, 224, 224),), str(path), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"])  # fmt: skip
    return path


def output_error(outputs, reference: list[np.ndarray]) -> float:
    """The largest rel L2 of the model's outputs (tensors, any device) against onnxruntime's."""
    outputs = as_list(outputs)
    if len(outputs) != len(reference):
        return float("inf")
    arrays = [o.detach().cpu().numpy() for o in outputs]
    return max(rel_l2(a.reshape(r.shape), r) if a.size == r.size else float("inf") for a, r in zip(arrays, reference))


def as_list(result) -> list:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def device_ms(fn: Callable[[], object]) -> float:
    """Median CUDA-event time of ``fn`` over 50 calls."""
    import torch

    samples = []
    with torch.inference_mode():
        for _ in range(50):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def torch_eager(model: Path, feeds: dict, reference: list[np.ndarray], runs: int, warmup: int) -> dict:
    """PyTorch eager on the model, numpy in and out; device time by CUDA events; rel L2 against onnxruntime."""
    import torch

    module = torch_module(model)
    arrays = list(feeds.values())

    def eager():
        with torch.inference_mode():
            inputs = [torch.from_numpy(a).cuda() for a in arrays]
            return [o.cpu().numpy() for o in as_list(module(*inputs))]

    static = [torch.from_numpy(a).cuda() for a in arrays]
    with torch.inference_mode():
        error = output_error(module(*static), reference)
    return {"eager_ms": median_ms(eager, runs, warmup), "eager_device_ms": device_ms(lambda: module(*static)),
            "eager_rel_l2": error}  # fmt: skip


def traced(module, inputs: list):
    """``module`` traced on ``inputs`` and frozen: a TorchScript graph whose shape operands are constants."""
    import torch

    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(module, tuple(inputs), check_trace=False, strict=False).eval())


CANDIDATES: list[tuple[str, Callable]] = [("module", lambda module, inputs: module), ("traced", traced)]


def host_syncs(run: Callable[[], object]) -> list[str]:
    """What ``run()`` makes the host wait for or copy, as 'op at file:line (count)': values read on the host
    (``.item()``, ``.tolist()``, ``bool(tensor)``: ``_local_scalar_dense``; ``equal``, ``nonzero``), tensors built
    from host values (``lift_fresh``, from ``torch.tensor``) and copies between devices. Only ops called from Python
    or TorchScript count, not those an op's own kernel calls (a CPU kernel reading a 0-d operand)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    found: collections.Counter[str] = collections.Counter()

    class Probe(TorchDispatchMode):
        depth = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if self.depth == 0 and _touches_host(func.overloadpacket.__name__, args, kwargs):
                found[f"{func.overloadpacket.__name__} at {_caller()}"] += 1
            self.depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.depth -= 1

    with Probe():
        run()
    return [f"{what} ({count})" for what, count in found.items()]


HOST_OPS = {"_local_scalar_dense", "item", "equal", "nonzero", "lift_fresh", "is_nonzero"}


def _touches_host(name: str, args, kwargs) -> bool:
    import torch

    if name in HOST_OPS:
        return True
    if name in ("_to_copy", "copy_", "to"):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in tensors}
        if kwargs.get("device") is not None:
            devices.add(torch.device(kwargs["device"]).type)
        return len(devices) > 1
    return False


def _caller() -> str:
    """The innermost frame outside torch's package and this file ('reshape.py:20'), or TorchScript when that is
    this file (a traced module runs no Python)."""
    import torch

    package = str(Path(torch.__file__).parent)
    frames = list(reversed(traceback.extract_stack()))
    while frames and frames[0].filename == __file__:  # the probe's own frames
        frames.pop(0)
    for frame in frames:
        if not frame.filename.startswith(package):
            path = Path(frame.filename)
            return "TorchScript" if frame.filename == __file__ else f"{path.name}:{frame.lineno}"
    return "TorchScript"


def captured(run: Callable[[], object]):
    """``run`` captured into a CUDA graph after three warm-up calls on a side stream: (graph, static outputs)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = as_list(run())
    return graph, outputs


def torch_graph(model: Path, feeds: dict, reference: list[np.ndarray], runs: int, warmup: int) -> dict:
    """The model replayed from a CUDA graph (inputs copied into static tensors, outputs copied out): the first of
    ``CANDIDATES`` that captures and matches onnxruntime. ``graph_attempts`` says why earlier ones were passed over,
    ``graph_error`` why each was when none worked: every failure is caught and the next candidate tried."""
    import torch

    module = torch_module(model)
    arrays = list(feeds.values())
    static = [torch.from_numpy(a).cuda() for a in arrays]
    attempts: dict[str, str] = {}
    for index, (method, make) in enumerate(CANDIDATES):
        try:
            replay, graph, outputs = graph_replay(make(module, static), static, arrays, index + 1 == len(CANDIDATES))
        except Exception as e:  # noqa: BLE001 - a failed candidate is a reason, then the next one
            attempts[method] = str(e) if isinstance(e, NotCaptured) else short_error(e)
            _settle()
            continue
        error = output_error(outputs, reference)
        if not error <= TOLERANCE:
            attempts[method] = f"captured, but rel L2 {error:.2e} against onnxruntime (> {TOLERANCE})"
            continue
        return {"graph_method": method, "graph_ms": median_ms(replay, runs, warmup),
                "graph_device_ms": device_ms(graph.replay), "graph_rel_l2": error,
                "graph_attempts": attempts}  # fmt: skip
    return {"graph_error": "; ".join(f"{m}: {r}" for m, r in attempts.items())}


class NotCaptured(Exception):
    """A candidate passed over: its host syncs, or its capture's error."""


def graph_replay(candidate, static: list, arrays: list[np.ndarray], last: bool):
    """``candidate(*static)`` captured, and replayed once on ``arrays``: (replay function, graph, static outputs).
    Raises NotCaptured instead of capturing a candidate with host syncs, unless it is the ``last``."""
    import torch

    with torch.inference_mode(), torch.jit.optimized_execution(False):
        try:
            syncs = host_syncs(lambda: candidate(*static))
        except Exception as e:  # noqa: BLE001 - the probe is advice: the capture decides
            syncs = [f"probe failed, {short_error(e)}"]
        if syncs and not last:
            raise NotCaptured("not captured, host syncs: " + ", ".join(syncs[:4]))
        try:
            graph, outputs = captured(lambda: candidate(*static))
        except Exception as e:
            syncs_note = f" (host syncs: {', '.join(syncs[:2])})" if syncs else ""
            raise NotCaptured(f"capture failed: {short_error(e)}{syncs_note}") from e

    def replay():
        for tensor, array in zip(static, arrays):
            tensor.copy_(torch.from_numpy(array))
        graph.replay()
        return [o.cpu().numpy() for o in outputs]

    replay()
    return replay, graph, outputs


def _settle() -> None:
    """Wait for the device after a failed capture, so its error does not surface in the next candidate."""
    import torch

    try:
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        print(f"  after a failed capture: {short_error(e)}", flush=True)
