"""Find the first node of a model whose OpenCL kernel fails or disagrees with the NumPy op, on one device.

    python benchmarks/opencl_bisect.py MODEL.onnx [--device opencl:0:0]

Each device-placed node runs alone (its inputs seeded random data) and is compared with the NumPy
implementation. A kernel that faults can leave the whole OpenCL context unusable, so the script stops at
the first exception, naming the node, its kernel template and config; run it once per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeinfer.backends import numpy as numpy_backend  # noqa: E402
from edgeinfer.backends import opencl  # noqa: E402
from edgeinfer.compiler import compile_model  # noqa: E402
from edgeinfer.tuning.workloads import single_node as single_node_graph  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--device", default="opencl")
    args = parser.parse_args()
    graph = compile_model(args.model)
    worst = 0.0
    for node in graph.nodes:
        if node.placement != "device":
            continue
        single, feeds = single_node_graph(graph, node)
        expected = numpy_backend.prepare(single).run(feeds)
        row = None
        try:
            executable = opencl.prepare(single, args.device)
            row = executable.explain()[0]
            got = executable.run(feeds)
        except Exception as e:  # noqa: BLE001 - report whatever the driver raised, then stop
            print(
                f"FAIL {Path(args.model).name} {node.name} {node.op} shapes "
                f"{[single.tensors[i].shape for i in single.inputs]} -> {e!r}"
            )
            print(f"     attrs {node.attrs}\n     plan {row}")
            return 1
        for name, value in expected.items():
            err = float(np.linalg.norm(got[name] - value) / max(np.linalg.norm(value), 1e-30))
            worst = max(worst, err)
            if err > 1e-4:
                print(f"MISMATCH {node.name} {node.op} {row['kernel']} {row['config']} rel L2 {err:.2e}")
    print(f"ok {Path(args.model).name}: {len(graph.nodes)} nodes, worst rel L2 {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
