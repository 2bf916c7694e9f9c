"""edgeinfer on CUDA against edgeinfer on NVIDIA's OpenCL, onnxruntime (CPU) and PyTorch, per shared model (issue 16).

End to end as ``Session.run`` is used (numpy in, numpy out): the median of ``--runs`` runs after ``--warmup``, in ms,
for edgeinfer-cuda with CUDA graphs (the default) and without (``EDGEINFER_CUDA_GRAPHS=0``), edgeinfer-opencl on the
NVIDIA device, onnxruntime's CPU provider, and where onnx2torch imports, PyTorch eager and PyTorch replaying a CUDA
graph (the same ONNX model converted; TF32 off). Device time: the sum of edgeinfer-cuda's per-node CUDA-event times
(``profile()``, kernels launched one by one) and PyTorch's CUDA-event time around the model call / graph replay.
Batch 1, fp32 (the QDQ model as compiled). ResNet-50 is not in the table yet.

    python benchmarks/gpu_compare.py [--runs 200] [--warmup 20] [--json out.json] [MODEL.onnx ...]
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


def torch_times(model: Path, feeds, runs: int, warmup: int) -> dict:
    """PyTorch eager and CUDA-graph replay of the onnx2torch conversion, numpy in and out; device time by events."""
    import onnx2torch
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    module = onnx2torch.convert(str(model)).cuda().eval()
    arrays = list(feeds.values())

    def outputs(result):
        return result if isinstance(result, (list, tuple)) else [result]

    def eager():
        with torch.inference_mode():
            inputs = [torch.from_numpy(a).cuda() for a in arrays]
            return [o.cpu().numpy() for o in outputs(module(*inputs))]

    result = {"eager_ms": median_ms(eager, runs, warmup)}
    static = [torch.from_numpy(a).cuda() for a in arrays]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            module(*static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = outputs(module(*static))

    def replay():
        for tensor, array in zip(static, arrays):
            tensor.copy_(torch.from_numpy(array))
        graph.replay()
        return [o.cpu().numpy() for o in static_out]

    result["graph_ms"] = median_ms(replay, runs, warmup)
    for key, fn in (("eager_device_ms", lambda: module(*static)), ("graph_device_ms", graph.replay)):
        samples = []
        with torch.inference_mode():
            for _ in range(50):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        result[key] = statistics.median(samples)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = args.models or [SHARED / "models" / name for name in SHARED_MODELS]
    try:
        import onnx2torch  # noqa: F401

        torch_note = ""
    except ImportError as e:
        torch_note = f"PyTorch columns skipped: onnx2torch does not import ({e})"
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
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
                    row["torch"] = torch_times(model, feeds, args.runs, args.warmup)
                except Exception as e:  # noqa: BLE001 - a model onnx2torch cannot convert: say so, go on
                    row["torch"] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"}
            table[model.stem] = row
            print(model.stem, json.dumps(row, default=str), flush=True)
    print_table(table, torch_note)
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "note": torch_note, "table": table}, indent=1) + "\n")
    return 0


def print_table(table: dict, torch_note: str) -> None:
    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "-" if value is None else f"{value:.3f}"

    header = ["model", "cuda", "cuda dev", "cuda no-graphs", "opencl", "ort cpu", "torch eager", "torch graph",
              "torch graph dev"]  # fmt: skip
    print("\nend-to-end medians in ms (dev: device time)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in table.items():
        torch = row.get("torch", {})
        cells = [name, cell(row["cuda"], "wall_ms"), cell(row["cuda"], "device_ms"),
                 cell(row["cuda_nographs"], "wall_ms"), cell(row["opencl"], "wall_ms"),
                 cell(row["onnxruntime_cpu"], "wall_ms"), cell(torch, "eager_ms"), cell(torch, "graph_ms"),
                 cell(torch, "graph_device_ms")]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
        for column in ("cuda", "cuda_nographs", "opencl", "torch"):
            if "error" in row.get(column, {}):
                print(f"  {name} {column}: {row[column]['error']}")
    if torch_note:
        print(torch_note)


if __name__ == "__main__":
    sys.exit(main())
