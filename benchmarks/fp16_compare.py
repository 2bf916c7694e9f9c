"""fp16 packs against fp32 packs, per shared model, on one device (issue 16, item 6; docs/fp16.md).

Each model is compiled twice with its preset pipeline (``compile_model(..., fp16=True)`` is ``edgeinfer compile
--fp16``). Reported per model:

- accuracy on every shared photo: classifiers' top-1 agreement between the fp16 and the fp32 pack (and the top-1
  score's largest difference); detectors' fp32 detections that the fp16 pack finds again (same label, IoU >= 0.5)
  and the fp16 detections that match the manifest's onnxruntime references (same label, IoU >= 0.9, |dscore| <=
  0.01, as tests/test_detection.py checks fp32);
- the raw outputs' rel L2 between the packs on seeded random input;
- speed end to end as ``Session.run`` is used (numpy in, numpy out), medians of ``--runs`` after ``--warmup``,
  and device time (the sum of ``profile()``'s per-node kernel times, kernels launched one by one);
- pack sizes, and whether the executable stored its tensors as half (GPUs) or ran the fp16 pack in float (CPUs).

    python benchmarks/fp16_compare.py [--device cuda] [--runs 200] [--warmup 20] [--json out.json] [MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
from common import SHARED, median_ms, random_feeds, rel_l2, short_error

from edgeinfer import Session
from edgeinfer.compiler import compile_model
from edgeinfer.pack import write_pack
from edgeinfer.pipelines.config import default_labels, resolve_pipeline

PRESETS = {
    "mobilenet_v2_1.0_224.onnx": "mobilenet",
    "squeezenet1.1.onnx": "squeezenet",
    "yolox_nano_416.onnx": "yolox",
    "mobilenet_v1_0.25_128.onnx": "mobilenet_v1",
    "fastestdet_352.onnx": "fastestdet",
    "ultraface_rfb_320.onnx": "ultraface",
    "mobilenet_v2_1.0_224_qdq_uint8.onnx": "mobilenet_qdq",
}
DETECTORS = {"yolox", "fastestdet", "ultraface"}


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def matched(found, wanted, same) -> int:
    """How many of ``wanted`` find their own partner in ``found`` under ``same(found_one, wanted_one)``."""
    free, count = list(found), 0
    for want in wanted:
        partner = next((f for f in free if same(f, want)), None)
        if partner is not None:
            free.remove(partner)
            count += 1
    return count


def packs(model: Path, preset: str, folder: Path) -> tuple[Path, Path]:
    pipeline = resolve_pipeline(preset, None, {} if preset in DETECTORS else {"top_k": 5})
    paths = []
    for fp16 in (False, True):
        graph = compile_model(model, pipeline=pipeline, fp16=fp16)
        graph.metadata["labels"] = default_labels(pipeline, model)
        paths.append(folder / f"{model.stem}{'_fp16' if fp16 else ''}.pack")
        write_pack(graph, paths[-1])
    return paths[0], paths[1]


def accuracy(s32: Session, s16: Session, preset: str, reference: dict) -> dict:
    images = sorted(p for p in (SHARED / "images").iterdir() if p.suffix in (".jpg", ".png"))
    if preset not in DETECTORS:
        agree, score_diff = 0, 0.0
        for image in images:
            (l32, p32), *_ = s32.run(str(image))
            (l16, p16), *_ = s16.run(str(image))
            agree += l32 == l16
            score_diff = max(score_diff, abs(float(p32) - float(p16)))
        return {"images": len(images), "top1_agree": agree, "top1_score_max_diff": score_diff}
    kept = total = ref_found = ref_total = 0
    for image in images:
        d32, d16 = s32.run(str(image)), s16.run(str(image))
        total += len(d32)
        kept += matched(d16, d32, lambda a, b: a.label == b.label and iou(a.box, b.box) >= 0.5)
        if image.name in reference:
            ref = reference[image.name]
            ref_total += len(ref)
            ref_found += matched(d16, ref, lambda a, b: a.label == b["label"] and iou(a.box, b["box"]) >= 0.9
                                 and abs(a.score - b["score"]) <= 0.01)  # fmt: skip
    return {"images": len(images), "fp32_detections": total, "found_by_fp16": kept,
            "reference_detections": ref_total, "reference_matched_by_fp16": ref_found}  # fmt: skip


def compare(model: Path, preset: str, device: str, runs: int, warmup: int, folder: Path, reference: dict) -> dict:
    p32, p16 = packs(model, preset, folder)
    row: dict = {"model": model.name, "pack_mb": [round(p.stat().st_size / 2**20, 2) for p in (p32, p16)]}
    try:
        s32, s16 = Session(p32, device=device), Session(p16, device=device)
    except Exception as e:  # noqa: BLE001 - an unusable device is a row of the table, not the end of it
        return {**row, "error": short_error(e)}
    row["backend"] = s16.backend
    row["half_storage"] = bool(getattr(s16._executable, "half_storage", False))
    feeds = random_feeds(s32.inputs)
    out32, out16 = s32.run(feeds), s16.run(feeds)
    errors = [rel_l2(out16[name].astype(np.float64), out32[name]) for name in out32
              if np.issubdtype(out32[name].dtype, np.floating)]  # fmt: skip
    row["rel_l2"] = max(errors) if errors else None  # the QDQ model's outputs are uint8
    row.update(accuracy(s32, s16, preset, reference))
    row["fp32_ms"] = median_ms(lambda: s32.run(feeds), runs, warmup)
    row["fp16_ms"] = median_ms(lambda: s16.run(feeds), runs, warmup)
    row["speedup"] = row["fp32_ms"] / row["fp16_ms"]
    for key, session in (("fp32_device_ms", s32), ("fp16_device_ms", s16)):  # kernels one by one (profile)
        row[key] = sum(r["time_ms"] for r in session.profile(feeds, repeat=20) if r["kernel"] != "numpy")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="shared model files (default: all)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    manifest = {e["file"]: e for e in json.loads((SHARED / "models" / "manifest.json").read_text())}
    rows = []
    print(f"device {args.device} on {platform.node()}; fp16 pack vs fp32 pack, end to end ms (numpy in and out)")
    print(
        "| model | backend | half storage | pack MB fp32/fp16 | rel L2 | accuracy | fp32 ms | fp16 ms | speed-up | "
        "device ms fp32/fp16 |"
    )
    print("|---|---|---|---|---:|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as folder:
        for file in args.models or list(PRESETS):
            reference = manifest.get(file, {}).get("reference_detections_onnxruntime") or {}
            row = compare(SHARED / "models" / file, PRESETS[file], args.device, args.runs, args.warmup, Path(folder),
                          reference)  # fmt: skip
            rows.append(row)
            if "error" in row:
                print(f"| {file} | error: {row['error']} |")
                continue
            if "top1_agree" in row:
                acc = f"top-1 {row['top1_agree']}/{row['images']} (score diff <= {row['top1_score_max_diff']:.4f})"
            else:
                acc = (f"{row['found_by_fp16']}/{row['fp32_detections']} fp32 dets, "
                       f"{row['reference_matched_by_fp16']}/{row['reference_detections']} reference")  # fmt: skip
            error = "-" if row["rel_l2"] is None else format(row["rel_l2"], ".1e")
            device = f"{row['fp32_device_ms']:.3f}/{row['fp16_device_ms']:.3f}"
            print(f"| {file} | {row['backend']} | {row['half_storage']} | {row['pack_mb'][0]}/{row['pack_mb'][1]} | "
                  f"{error} | {acc} | {row['fp32_ms']:.3f} | {row['fp16_ms']:.3f} | {row['speedup']:.2f}x | {device} |",
                  flush=True)  # fmt: skip
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
