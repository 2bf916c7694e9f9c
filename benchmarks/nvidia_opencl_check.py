"""Correctness and latency of the OpenCL backend on an NVIDIA GPU, next to PyTorch eager, in one run.

    python benchmarks/nvidia_opencl_check.py                  # every shared model, the first OpenCL GPU
    python benchmarks/nvidia_opencl_check.py --runs 200 --models mobilenet_v2_1.0_224.onnx
    OUT=/tmp/out python benchmarks/nvidia_opencl_check.py     # also writes $OUT/nvidia_opencl_check.json

Per shared model: compile, prepare on the OpenCL device, compare every output with the reference
(onnxruntime CPU with graph optimisations off, the ONNX definition; the NumPy backend if onnxruntime is
missing) by relative L2 error, and time batch-1 latency (median over --runs after --warmup; host-to-output,
input upload and output read included). PyTorch eager runs torchvision's mobilenet_v2 and squeezenet1_1
(random weights: latency does not depend on them) on the same GPU, alternated with edgeinfer in the same
rounds. The five slowest kernels of each model come from OpenCL profiling events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import SHARED, SHARED_MODELS, random_feeds, rel_l2  # noqa: E402

MODELS = SHARED_MODELS
TORCHVISION_EQUIVALENTS = {"mobilenet_v2_1.0_224.onnx": "mobilenet_v2", "squeezenet1.1.onnx": "squeezenet1_1"}


def reference_outputs(path: Path, graph, feeds) -> tuple[dict[str, np.ndarray], str]:
    try:
        import onnxruntime as ort
    except ImportError:
        from edgeinfer.backends import numpy as numpy_backend

        return numpy_backend.prepare(graph).run(feeds), "edgeinfer NumPy backend"
    ort.set_default_logger_severity(3)  # UltraFace's initializers-as-inputs warnings
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    return {spec.name: value for spec, value in zip(session.get_outputs(), outputs)}, "onnxruntime CPU (no graph opt)"


def torch_runner(model_file: str, input_shape: tuple[int, ...]):
    """A callable running the torchvision equivalent on the GPU (synchronised), or None."""
    arch = TORCHVISION_EQUIVALENTS.get(model_file)
    if arch is None:
        return None, "no torchvision equivalent"
    try:
        import torch
        import torchvision
    except ImportError as e:
        return None, f"torch/torchvision missing: {e}"
    if not torch.cuda.is_available():
        return None, "CUDA not available to torch"
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval().cuda()
    x = torch.rand(input_shape, device="cuda")

    def run():
        with torch.no_grad():
            model(x)
        torch.cuda.synchronize()

    return run, f"torchvision.{arch} eager, random weights, {torch.cuda.get_device_name()}"


def check_model(model_file: str, device: str, runs: int, warmup: int) -> dict:
    from edgeinfer.backends import opencl
    from edgeinfer.compiler import compile_model

    path = SHARED / "models" / model_file
    graph = compile_model(path)
    feeds = random_feeds([graph.tensors[name] for name in graph.inputs])
    start = time.perf_counter()
    executable = opencl.prepare(graph, device)
    prepare_s = time.perf_counter() - start
    reference, reference_name = reference_outputs(path, graph, feeds)
    outputs = executable.run(feeds)
    errors = {name: rel_l2(outputs[name], reference[name]) for name in reference}
    explained = executable.explain()
    fallbacks = [f"{r['name']} ({r['op']}): {r['config_source']}" for r in explained if r["placement"] != "device"]
    torch_run, torch_note = torch_runner(model_file, graph.tensors[graph.inputs[0]].shape)
    contenders = {"edgeinfer-opencl": lambda: executable.run(feeds)}
    if torch_run is not None:
        contenders["torch-eager"] = torch_run
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(runs):
        for label, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    medians = {label: float(np.median(v)) * 1e3 for label, v in times.items()}
    profile = executable.profile(feeds, repeat=10)
    kernel_ms = sum(row["time_ms"] for row in profile)
    return {
        "model": model_file,
        "max_rel_l2": max(errors.values()),
        "rel_l2": errors,
        "reference": reference_name,
        "pass": max(errors.values()) <= 1e-4,
        "fallback_nodes": fallbacks,
        "prepare_s": prepare_s,
        "opencl_ms": medians["edgeinfer-opencl"],
        "opencl_kernel_sum_ms": kernel_ms,
        "launches": sum(1 for step in executable.steps if step.kind == "kernel"),
        "torch_ms": medians.get("torch-eager"),
        "torch": torch_note,
        "top_kernels": [
            {k: row[k] for k in ("name", "op", "kernel", "time_ms", "gflops", "gbps", "share")} for row in profile[:5]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--device", default="opencl", help="opencl (first GPU) or opencl:P:D")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    from edgeinfer.backends import opencl

    for info in opencl.list_devices():
        status = "usable" if info.usable else f"NOT usable: {info.reason}"
        print(f"{info.spec:12s} {info.kind:4s} {info.name} [{info.details.get('driver_version', '')}] "
              f"key={info.device_key} {status}")  # fmt: skip
    from edgeinfer.backends.opencl.runtime import select_device

    chosen = select_device(args.device).info
    print(f"running on {chosen.spec} {chosen.name}\n")
    results = []
    header = f"{'model':38s} {'relL2':>9s} ok  {'opencl ms':>9s} {'kernels ms':>10s} {'launches':>8s} {'torch ms':>9s}"
    print(header + " ratio")
    for model_file in args.models:
        if not (SHARED / "models" / model_file).exists():
            print(f"{model_file}: not found under {SHARED / 'models'}")
            continue
        try:
            row = check_model(model_file, args.device, args.runs, args.warmup)
        except Exception as e:  # keep going: one failing model must not hide the others' numbers
            print(f"{model_file:38s} FAILED: {type(e).__name__}: {str(e)[:2000]}")
            results.append({"model": model_file, "pass": False, "error": f"{type(e).__name__}: {e}"})
            continue
        results.append(row)
        torch_ms = f"{row['torch_ms']:9.3f}" if row["torch_ms"] else f"{'-':>9s}"
        ratio = f"{row['opencl_ms'] / row['torch_ms']:5.2f}" if row["torch_ms"] else "    -"
        print(f"{model_file:38s} {row['max_rel_l2']:9.2e} {'yes' if row['pass'] else 'NO '} {row['opencl_ms']:9.3f} "
              f"{row['opencl_kernel_sum_ms']:10.3f} {row['launches']:8d} {torch_ms} {ratio}")  # fmt: skip
        for fallback in row["fallback_nodes"]:
            print(f"    fallback: {fallback}")
        for k in row["top_kernels"][:3]:
            print(f"    {k['name'][:30]:30s} {k['kernel']:10s} {k['time_ms']:7.3f} ms {k['gflops']:7.1f} GFLOP/s "
                  f"{k['gbps']:6.1f} GB/s {k['share'] * 100:4.1f}%")  # fmt: skip
    out_dir = os.environ.get("OUT")
    if out_dir:
        report = {"device": chosen.__dict__, "runs": args.runs, "results": results}
        Path(out_dir, "nvidia_opencl_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"\nwrote {Path(out_dir, 'nvidia_opencl_check.json')}")
    sys.exit(0 if all(r["pass"] for r in results) else 1)


if __name__ == "__main__":
    main()
