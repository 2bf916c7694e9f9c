"""The edgeinfer command line on the shipped demo model: compile, run, info, bench, devices, and its errors."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO
from edgeinfer.cli import main

SQUEEZENET = DEMO / "squeezenet1.1.onnx"


@pytest.fixture(scope="module")
def demo_pack(tmp_path_factory):
    if not SQUEEZENET.exists():
        pytest.skip(f"demo model {SQUEEZENET} missing")
    path = tmp_path_factory.mktemp("cli") / "squeezenet.pack"
    rc = main(
        [
            "compile",
            str(SQUEEZENET),
            "-o",
            str(path),
            "--preset",
            "squeezenet",
            "--labels",
            str(DEMO / "imagenet1000_winml.txt"),
        ]
    )
    assert rc == 0
    return path


def test_run_prints_top5(demo_pack, capsys):
    assert main(["run", str(demo_pack), str(DEMO / "chelsea.png"), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("chelsea.png")
    assert "Egyptian cat" in lines[1]  # the manifest's top-1 for this photo
    assert len(lines) == 6


def test_run_json(demo_pack, capsys):
    assert main(["run", str(demo_pack), str(DEMO / "chelsea.png"), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    label, score = next(iter(result.values()))[0]
    assert label == "Egyptian cat" and abs(score - 0.7319) < 0.01


def test_info_reports_plan_and_flops(demo_pack, capsys):
    assert main(["info", str(demo_pack), "--nodes"]) == 0
    out = capsys.readouterr().out
    assert "memory plan: arena" in out and "naive sum" in out
    assert "Conv" in out and "GFLOP" in out


def test_bench_json(demo_pack, capsys):
    assert main(["bench", str(demo_pack), "--device", "cpu", "-n", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs"] == 3 and 0 < report["median_ms"] <= report["p90_ms"] + 1e-9


def test_devices_lists_cpu(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "backend cpu: available" in out


def test_bad_pack_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pack"
    bad.write_bytes(b"not a pack at all")
    assert main(["run", str(bad), "x.png"]) == 2
    assert "not an edgeinfer pack" in capsys.readouterr().err


def test_bad_input_shape_flag(tmp_path, capsys):
    assert main(["compile", str(SQUEEZENET), "-o", str(tmp_path / "x.pack"), "--input-shape", "data_0"]) == 2
    assert "NAME=1x3x224x224" in capsys.readouterr().err


def test_bench_profile_lists_nodes_slowest_first(demo_pack, capsys):
    assert main(["bench", str(demo_pack), "--device", "cpu", "--profile", "-n", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["nodes"]
    assert len(rows) == 41 and len({r["name"] for r in rows}) == 41  # every node of SqueezeNet once
    assert {"Conv", "MaxPool", "Concat"} <= {r["op"] for r in rows}
    assert [r["time_ms"] for r in rows] == sorted((r["time_ms"] for r in rows), reverse=True)
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-6


def test_a_closed_pipe_ends_the_command_quietly():
    """``edgeinfer devices | head -1`` must not print a BrokenPipeError traceback."""
    import subprocess
    import sys

    code = "import sys; sys.argv = ['edgeinfer', 'devices']; from edgeinfer.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in stderr, stderr
