"""The runtime must import and run a pack where onnx is not installed (a camera script on a small board)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import DEMO
from edgeinfer.pack import write_pack

BLOCK_ONNX = r"""
import sys, importlib.abc
class NoOnnx(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "onnx" or name.startswith("onnx.") or name.startswith("onnxruntime"):
            raise ImportError(f"onnx is not installed (blocked by test): {name}")
sys.meta_path.insert(0, NoOnnx())
import numpy as np
import edgeinfer
"""

RAW = (
    BLOCK_ONNX
    + r"""
sess = edgeinfer.Session(sys.argv[1], device="cpu")
y = sess.run({"x": np.ones((1, 3, 4, 4), np.float32)})["y"]
assert y.shape == (1, 3, 4, 4), y.shape
"""
)

IMAGE = (
    BLOCK_ONNX
    + r"""
for device in ("cpu", "auto"):
    top = edgeinfer.Session(sys.argv[1], device=device).run(sys.argv[2])
    assert top[0][0] == "Egyptian cat", (device, top)
"""
)

CHECK = r"""
assert not any(m == "onnx" or m.startswith("onnx.") for m in sys.modules)
print("ok")
"""


def run_without_onnx(script: str, *args: str) -> None:
    out = subprocess.run([sys.executable, "-c", script + CHECK, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_run_tiny_pack_without_onnx(tiny, tmp_path):
    write_pack(tiny, tmp_path / "t.pack")
    run_without_onnx(RAW, str(tmp_path / "t.pack"))


def test_classify_demo_photo_without_onnx(tmp_path):
    """The demo model compiled here (with onnx), then run from a process where onnx cannot be imported."""
    from edgeinfer.cli import main

    if not (DEMO / "squeezenet1.1.onnx").exists():
        pytest.skip("demo model missing")
    pack = tmp_path / "squeezenet.pack"
    assert main(["compile", str(DEMO / "squeezenet1.1.onnx"), "-o", str(pack), "--preset", "squeezenet",
                 "--labels", str(DEMO / "imagenet1000_winml.txt")]) == 0  # fmt: skip
    run_without_onnx(IMAGE, str(pack), str(DEMO / "chelsea.png"))
