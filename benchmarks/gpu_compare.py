"""edgeinfer on CUDA against edgeinfer on NVIDIA's OpenCL, onnxruntime (CPU) and PyTorch, per shared model (issue 16).

End to end as ``Session.run`` is used (numpy in, numpy out): the median of ``--runs`` runs after ``--warmup``, in ms,
for edgeinfer-cuda with CUDA graphs (the default) and without (``EDGEINFER_CUDA_GRAPHS=0``), edgeinfer-opencl on the
NVIDIA device, onnxruntime's CPU provider, and where onnx2torch imports, PyTorch eager and PyTorch replaying a CUDA
graph (the same ONNX model converted; TF32 off). Device time: the sum of edgeinfer-cuda's per-node CUDA-event times
(``profile()``, kernels launched one by one) and PyTorch's CUDA-event time around the model call / graph replay.
Batch 1, fp32 (the QDQ model as compiled); ``--resnet50`` adds torchvision's ResNet-50 (seeded random weights).

    python benchmarks/gpu_compare.py [--runs 200] [--warmup 20] [--resnet50] [--json out.json] [MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED, SHARED_MODELS, random_feeds

from edgeinfer import Session
from edgeinfer.compiler import compile_model
from edgeinfer.pack import write_pack


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def edgeinfer_times(pack: Path, device: str, feeds, runs: int, warmup: int, graphs: str = "1") -> dict:
    os.environ["EDGEINFER_CUDA_GRAPHS"] = graphs  # read when the executable is prepared
    try:
        session = Session(pack, device=device)
    except Exception as e:  # noqa: BLE001 - an unusable device is a cell of the table, not the end of it
        return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"}
    finally:
        os.environ["EDGEINFER_CUDA_GRAPHS"] = "1"
    result = {"wall_ms": median_ms(lambda: session.run(feeds), runs, warmup), "backend": session.backend}
    if graphs == "1":
        rows = session.profile(feeds, repeat=20)
        result["device_ms"] = sum(r["time_ms"] for r in rows if r["kernel"] != "numpy")
        result["host_node_ms"] = sum(r["time_ms"] for r in rows if r["kernel"] == "numpy")
        result["slowest"] = [(r["name"], r["kernel"], round(r["time_ms"], 4)) for r in rows[:5]]
    if session.backend == "cuda":
        result["segments"] = session._executable.segments()
    return result


def onnxruntime_ms(model: Path, feeds, runs: int, warmup: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return {"wall_ms": median_ms(lambda: sess.run(None, feeds), runs, warmup)}


def torch_module(model: Path):
    """onnx2torch's conversion of ``model`` on the GPU; models below opset 13 (SqueezeNet's 7, ...) are upgraded first
    with ONNX's version converter, as onnx2torch converts few old op versions."""
    import onnx
    import onnx2torch
    from onnx import version_converter

    if model.stem == RESNET50:  # the torchvision module itself (same seed, same weights as its export)
        return resnet50_module().cuda().eval()
    proto = onnx.load(str(model))
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset < 13:
        proto = version_converter.convert_version(proto, 13)
    return onnx2torch.convert(proto).cuda().eval()


def device_ms(fn) -> float:
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


def torch_eager(model: Path, feeds, runs: int, warmup: int) -> dict:
    """PyTorch eager on the onnx2torch conversion, numpy in and out; device time by events (TF32 off)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    module = torch_module(model)
    arrays = list(feeds.values())

    def eager():
        with torch.inference_mode():
            inputs = [torch.from_numpy(a).cuda() for a in arrays]
            return [o.cpu().numpy() for o in _outputs(module(*inputs))]

    static = [torch.from_numpy(a).cuda() for a in arrays]
    return {"eager_ms": median_ms(eager, runs, warmup), "eager_device_ms": device_ms(lambda: module(*static))}


def torch_graph(model: Path, feeds, runs: int, warmup: int) -> dict:
    """The same module replayed from a CUDA graph (captured after warm-up on a side stream, inputs copied into static
    tensors). onnx2torch modules that copy host tensors or synchronise while running cannot be captured: the error
    is the cell. Run after every eager measurement: a failed capture can leave the CUDA context unusable."""
    import torch

    module = torch_module(model)
    arrays = list(feeds.values())
    static = [torch.from_numpy(a).cuda() for a in arrays]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            module(*static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = _outputs(module(*static))

    def replay():
        for tensor, array in zip(static, arrays):
            tensor.copy_(torch.from_numpy(array))
        graph.replay()
        return [o.cpu().numpy() for o in static_out]

    return {"graph_ms": median_ms(replay, runs, warmup), "graph_device_ms": device_ms(graph.replay)}


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"


def _outputs(result):
    return result if isinstance(result, (list, tuple)) else [result]


RESNET50 = "resnet50_random"


def resnet50_module():
    """torchvision's ResNet-50 with seeded random weights (no download)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def resnet50_onnx(directory: Path) -> Path:
    """``resnet50_module`` exported to ONNX (opset 17)."""
    import torch

    model = resnet50_module()
    path = directory / f"{RESNET50}.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"])  # fmt: skip
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--resnet50", action="store_true", help="add torchvision's ResNet-50 (random weights) as ONNX")
    args = parser.parse_args()
    models = args.models or [SHARED / "models" / name for name in SHARED_MODELS]
    try:
        import onnx2torch  # noqa: F401

        torch_note = ""
    except ImportError as e:
        torch_note = f"PyTorch columns skipped: onnx2torch does not import ({e})"
    table: dict[str, dict] = {}
    feeds_of: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.resnet50:
            try:
                models.append(resnet50_onnx(Path(tmp)))
            except Exception as e:  # noqa: BLE001
                print(f"ResNet-50 not exported: {_short(e)}")
        for model in models:
            if not model.exists():
                print(f"{model}: not found, skipped")
                continue
            pack = Path(tmp) / f"{model.stem}.pack"
            write_pack(compile_model(model), pack)
            feeds = random_feeds(Session(pack, device="cpu").inputs)
            row = {
                "cuda": edgeinfer_times(pack, "cuda", feeds, args.runs, args.warmup),
                "cuda_nographs": edgeinfer_times(pack, "cuda", feeds, args.runs, args.warmup, graphs="0"),
                "opencl": edgeinfer_times(pack, "opencl", feeds, args.runs, args.warmup),
                "onnxruntime_cpu": onnxruntime_ms(model, feeds, args.runs, args.warmup),
            }
            if not torch_note:
                try:
                    row["torch"] = torch_eager(model, feeds, args.runs, args.warmup)
                except Exception as e:  # noqa: BLE001 - a model onnx2torch cannot convert: say so, go on
                    row["torch"] = {"error": _short(e)}
            table[model.stem] = row
            feeds_of[model.stem] = (model, feeds)
            print(model.stem, json.dumps(row, default=str), flush=True)
        for stem, (model, feeds) in feeds_of.items():  # CUDA-graph captures last (a failed one can spoil the context)
            if not torch_note and "error" not in table[stem].get("torch", {"error": ""}):
                try:
                    table[stem]["torch"].update(torch_graph(model, feeds, args.runs, args.warmup))
                except Exception as e:  # noqa: BLE001
                    table[stem]["torch"]["graph_error"] = _short(e)
    print_table(table, torch_note)
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "note": torch_note, "table": table}, indent=1) + "\n")
    return 0


def print_table(table: dict, torch_note: str) -> None:
    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "-" if value is None else f"{value:.3f}"

    header = ["model", "cuda", "cuda dev", "cuda no-graphs", "opencl", "ort cpu", "torch eager", "torch eager dev",
              "torch graph", "torch graph dev"]  # fmt: skip
    print("\nend-to-end medians in ms (dev: device time)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in table.items():
        torch = row.get("torch", {})
        cells = [name, cell(row["cuda"], "wall_ms"), cell(row["cuda"], "device_ms"),
                 cell(row["cuda_nographs"], "wall_ms"), cell(row["opencl"], "wall_ms"),
                 cell(row["onnxruntime_cpu"], "wall_ms"), cell(torch, "eager_ms"), cell(torch, "eager_device_ms"),
                 cell(torch, "graph_ms"), cell(torch, "graph_device_ms")]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
        for column in ("cuda", "cuda_nographs", "opencl", "torch"):
            for key in ("error", "graph_error"):
                if key in row.get(column, {}):
                    print(f"  {name} {column} {key}: {row[column][key]}")
    if torch_note:
        print(torch_note)


if __name__ == "__main__":
    sys.exit(main())
