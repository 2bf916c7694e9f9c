"""Classify an image: ``python examples/classify.py IMAGE [--pack P] [--device cpu]``.

Without ``--pack`` the shipped SqueezeNet 1.1 demo model is compiled once into a cached pack.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _demo import CLASSIFIER, demo_pack  # noqa: E402

import edgeinfer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="image file (any format PIL reads)")
    ap.add_argument("--pack", help="a classification .pack (default: the SqueezeNet demo model)")
    ap.add_argument("--device", default="auto", help="auto, cpu, opencl, opencl:P:D, ... (default auto)")
    args = ap.parse_args(argv)

    sess = edgeinfer.Session(args.pack or demo_pack(*CLASSIFIER), device=args.device)
    if not sess.pipeline or sess.pipeline.get("task") != "classification":
        ap.error(f"{sess.path} is not a classification pack (compile it with a classification preset)")
    start = time.perf_counter()
    top = sess.run(args.image)
    ms = (time.perf_counter() - start) * 1e3
    print(f"{args.image}  ({sess.backend}, {ms:.1f} ms)")
    for label, score in top:
        print(f"  {score:7.4f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
