"""edgeinfer on CUDA against edgeinfer on NVIDIA's OpenCL, onnxruntime (CPU) and PyTorch, per shared model (issue 16).

End to end as ``Session.run`` is used (numpy in, numpy out): the median of ``--runs`` runs after ``--warmup``, in ms,
for edgeinfer-cuda with CUDA graphs (the default) and without (``EDGEINFER_CUDA_GRAPHS=0``), edgeinfer-opencl on the
NVIDIA device, onnxruntime's CPU provider, and where onnx2torch imports, PyTorch eager and PyTorch replaying a CUDA
graph (the same ONNX model converted; TF32 off; how the graph was made and why other ways failed: torch_reference.py;
every PyTorch output checked against onnxruntime, a graph's time counted only within rel L2 1e-4). Device time: the
sum of edgeinfer-cuda's per-node CUDA-event times (``profile()``, kernels launched one by one) and PyTorch's
CUDA-event time around the model call / graph replay. Batch 1, fp32 (the QDQ model as compiled); ``--resnet50`` adds
torchvision's ResNet-50 (seeded random weights). The JSON is rewritten after every captured model.

    python benchmarks/gpu_compare.py [--runs 200] [--warmup 20] [--resnet50] [--json out.json] [MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import SHARED, SHARED_MODELS, median_ms, random_feeds, short_error
from torch_reference import resnet50_onnx, torch_eager, torch_graph

from edgeinfer import Session
from edgeinfer.compiler import compile_model
from edgeinfer.pack import write_pack


def edgeinfer_times(pack: Path, device: str, feeds, runs: int, warmup: int, graphs: str = "1") -> dict:
    os.environ["EDGEINFER_CUDA_GRAPHS"] = graphs  # read when the executable is prepared
    try:
        session = Session(pack, device=device)
    except Exception as e:  # noqa: BLE001 - an unusable device is a cell of the table, not the end of it
        return {"error": short_error(e)}
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


def onnxruntime_run(model: Path, feeds, runs: int, warmup: int) -> tuple[dict, list]:
    """onnxruntime's CPU time, and its outputs: the reference every PyTorch number is checked against."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return {"wall_ms": median_ms(lambda: sess.run(None, feeds), runs, warmup)}, sess.run(None, feeds)


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
                print(f"ResNet-50 not exported: {short_error(e)}")
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
            }
            row["onnxruntime_cpu"], reference = onnxruntime_run(model, feeds, args.runs, args.warmup)
            if not torch_note:
                try:
                    row["torch"] = torch_eager(model, feeds, reference, args.runs, args.warmup)
                except Exception as e:  # noqa: BLE001 - a model onnx2torch cannot convert: say so, go on
                    row["torch"] = {"error": short_error(e)}
            table[model.stem] = row
            feeds_of[model.stem] = (model, feeds, reference)
            print(model.stem, json.dumps(row, default=str), flush=True)
        for stem, (model, feeds, reference) in feeds_of.items():  # captures last: a failed one can spoil the context
            if not torch_note and "error" not in table[stem].get("torch", {"error": ""}):
                try:
                    table[stem]["torch"].update(torch_graph(model, feeds, reference, args.runs, args.warmup))
                except Exception as e:  # noqa: BLE001
                    table[stem]["torch"]["graph_error"] = short_error(e)
                print(stem, "torch graph", json.dumps(table[stem]["torch"], default=str), flush=True)
                save(args.json, args.runs, torch_note, table)
    print_table(table, torch_note)
    save(args.json, args.runs, torch_note, table)
    return 0


def save(path: Path | None, runs: int, torch_note: str, table: dict) -> None:
    """The JSON so far (rewritten after each capture, so a step cut off by its time limit still leaves one)."""
    if path:
        path.write_text(json.dumps({"runs": runs, "note": torch_note, "table": table}, indent=1, default=str) + "\n")


def print_table(table: dict, torch_note: str) -> None:
    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "-" if value is None else f"{value:.3f}"

    header = ["model", "cuda", "cuda dev", "cuda no-graphs", "opencl", "ort cpu", "torch eager", "torch eager dev",
              "torch graph", "torch graph dev", "graph from"]  # fmt: skip
    print("\nend-to-end medians in ms (dev: device time)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in table.items():
        torch = row.get("torch", {})
        cells = [name, cell(row["cuda"], "wall_ms"), cell(row["cuda"], "device_ms"),
                 cell(row["cuda_nographs"], "wall_ms"), cell(row["opencl"], "wall_ms"),
                 cell(row["onnxruntime_cpu"], "wall_ms"), cell(torch, "eager_ms"), cell(torch, "eager_device_ms"),
                 cell(torch, "graph_ms"), cell(torch, "graph_device_ms"), torch.get("graph_method", "-")]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
        for column in ("cuda", "cuda_nographs", "opencl", "torch"):
            for key in ("error", "graph_error"):
                if key in row.get(column, {}):
                    print(f"  {name} {column} {key}: {row[column][key]}")
        if "graph_method" in torch:
            for method, reason in torch["graph_attempts"].items():
                print(f"  {name} torch graph, {method} passed over: {reason}")
    if torch_note:
        print(torch_note)


if __name__ == "__main__":
    sys.exit(main())
