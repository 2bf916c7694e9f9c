"""Detect objects and write an annotated copy: ``python examples/detect.py IMAGE --out annotated.jpg``.

Without ``--pack`` the shipped FastestDet demo model is compiled once into a cached pack.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _demo import DETECTOR, demo_pack  # noqa: E402

import edgeinfer  # noqa: E402
from edgeinfer.pipelines import draw_detections  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="image file (any format PIL reads)")
    ap.add_argument("--out", default="annotated.jpg", help="where to write the annotated image")
    ap.add_argument("--pack", help="a detection .pack (default: the FastestDet demo model)")
    ap.add_argument("--device", default="auto", help="auto, cpu, opencl, opencl:P:D, ... (default auto)")
    args = ap.parse_args(argv)

    sess = edgeinfer.Session(args.pack or demo_pack(*DETECTOR), device=args.device)
    if not sess.pipeline or sess.pipeline.get("task") != "detection":
        ap.error(f"{sess.path} is not a detection pack (compile it with a detection preset)")
    start = time.perf_counter()
    detections = sess.run(args.image)
    ms = (time.perf_counter() - start) * 1e3
    print(f"{args.image}: {len(detections)} detections ({sess.backend}, {ms:.1f} ms)")
    for d in detections:
        x1, y1, x2, y2 = d.box
        print(f"  {d.score:.3f}  {d.label:<14} [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    draw_detections(args.image, detections, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
