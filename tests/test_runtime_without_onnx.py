"""The runtime must import and run a pack where onnx is not installed (a camera script on a small board)."""

from __future__ import annotations

import subprocess
import sys

from edgeinfer.pack import write_pack

SCRIPT = r"""
import sys, importlib.abc
class NoOnnx(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "onnx" or name.startswith("onnx.") or name.startswith("onnxruntime"):
            raise ImportError(f"onnx is not installed (blocked by test): {name}")
sys.meta_path.insert(0, NoOnnx())
import numpy as np
import edgeinfer
sess = edgeinfer.Session(sys.argv[1], device="cpu")
y = sess.run({"x": np.ones((1, 3, 4, 4), np.float32)})["y"]
assert y.shape == (1, 3, 4, 4), y.shape
assert not any(m == "onnx" or m.startswith("onnx.") for m in sys.modules)
print("ok")
"""


def test_run_pack_without_onnx(tiny, tmp_path):
    write_pack(tiny, tmp_path / "t.pack")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "t.pack")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
