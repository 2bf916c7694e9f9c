"""The examples run on the shipped demo files (examples/data), as a user would start them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import DEMO, REPO

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None, reason="the examples compile the demo models, which needs onnx"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    # One pack cache for the module: detect.py and camera.py share the compiled FastestDet.
    return {**os.environ, "EDGEINFER_CACHE": str(tmp_path_factory.mktemp("cache")), "PYTHONPATH": str(REPO)}


def run_example(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_classify(env):
    out = run_example(env, "examples/classify.py", str(DEMO / "chelsea.png"), "--device", "cpu")
    assert "Egyptian cat" in out.splitlines()[-5]  # top-1 (the manifest's reference: 0.7319)


def test_detect_writes_annotated_image(env, tmp_path):
    target = tmp_path / "annotated.jpg"
    out = run_example(env, "examples/detect.py", str(DEMO / "dog.jpg"), "--out", str(target), "--device", "cpu")
    assert "3 detections" in out and all(label in out for label in ("dog", "car", "bicycle"))
    assert target.stat().st_size > 10_000


def test_camera_loop_on_the_image_folder(env, tmp_path):
    out = run_example(
        env,
        "examples/camera.py",
        "--source",
        str(DEMO),
        "--headless",
        "--max-frames",
        "3",
        "--device",
        "cpu",
        "--save-dir",
        str(tmp_path),
    )
    frames = [line for line in out.splitlines() if line.startswith("frame ")]
    assert len(frames) == 2 and all("infer" in f and "FPS" in f for f in frames)  # two demo images
    assert len(list(tmp_path.glob("frame_*.jpg"))) == 2


def test_camera_says_when_there_is_no_camera(env):
    out = subprocess.run(
        [sys.executable, "examples/camera.py", "--source", "7", "--headless", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode != 0 and "no camera" in out.stderr
