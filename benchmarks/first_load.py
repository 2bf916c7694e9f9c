"""First loads with empty caches (cold) and filled ones (warm), each in a fresh process (issue 17).

    python benchmarks/first_load.py                                   # README demo, then every shared model on opencl
    python benchmarks/first_load.py --models squeezenet1.1.onnx --devices opencl,cpu
    python benchmarks/first_load.py --repeat 3 --markdown --json first_load.json   # median of 3 cold loads

Each model is compiled once with its preset (not timed here, only printed). A cold measurement gives a fresh
process a fresh temporary directory for every cache a first load fills (``CACHE_ENV``); the warm one is the next
fresh process on the same, now filled, directories. The child times ``import edgeinfer``, ``Session(pack, device)``,
the first ``run`` on an image and the second; "cold total" is import + Session + first run (the first answer).
"ready" is the time from the child's start until its final backend serves: on device "auto" a first load answers
from NumPy while OpenCL builds in the background (``Session.wait_until_ready``), elsewhere it equals the total;
"backend" shows the first run's backend, then the second's where they differ (``cpu->opencl``).
Bytecode: an installed package has it from pip, so edgeinfer's is compiled first (``compileall``; where
``PYTHONDONTWRITEBYTECODE`` is set, as on the 2-core VM, each process would otherwise compile the ~40 modules a
load imports: about 0.1 s of every Session). The child's stderr is a pipe (not a
terminal): the cold child runs with ``EDGEINFER_PROGRESS=1`` (edgeinfer's summary line is printed off a terminal),
the warm one with the default; any line that is not edgeinfer's own (``edgeinfer: ...``) counts as compiler output.
The README demo (``edgeinfer run squeezenet.pack examples/data/chelsea.png``) runs first, cold and warm, with its
stderr on a pseudo-terminal as a user's (the status line updates in place); its time is the whole process's.
On PoCL a cold load leaves a niced child that stores program binaries (background_build.store_binaries_later); the
warm process starts once it has finished, and "binaries s" is how long after the cold process that was.
"""

from __future__ import annotations

import argparse
import compileall
import fcntl
import json
import os
import platform
import pty
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, SHARED, SHARED_MODELS

PRESETS = {
    "squeezenet1.1.onnx": "squeezenet", "mobilenet_v2_1.0_224.onnx": "mobilenet",
    "mobilenet_v1_0.25_128.onnx": "mobilenet_v1", "mobilenet_v2_1.0_224_qdq_uint8.onnx": "mobilenet_qdq",
    "yolox_nano_416.onnx": "yolox", "fastestdet_352.onnx": "fastestdet", "ultraface_rfb_320.onnx": "ultraface",
}  # fmt: skip
# Every cache a first load may fill, each pointed at its own subdirectory of the measurement's temporary directory.
CACHE_ENV = {
    "EDGEINFER_CACHE_DIR": "edgeinfer",  # our program caches: opencl/ (binaries, or .built markers on PoCL), cuda/
    "POCL_CACHE_DIR": "pocl",  # PoCL's kernel cache: every program build and kernel per work-group size
    "XDG_CACHE_HOME": "xdg",  # the rest of ~/.cache: pyopencl's binaries, pytools' invoker cache, platformdirs
    "CUDA_CACHE_PATH": "nv",  # NVIDIA's JIT cache (~/.nv/ComputeCache), which its OpenCL driver uses too
    "__GL_SHADER_DISK_CACHE_PATH": "nv-gl",  # NVIDIA's shader cache: OpenCL should not touch it; harmless
    "CUPY_CACHE_DIR": "cupy",  # CuPy's kernel cache (~/.cupy/kernel_cache), for the CUDA backend's helpers
}
CHILD = """
import importlib, json, sys, time
t0 = time.perf_counter()
import edgeinfer
t1 = time.perf_counter()
session = edgeinfer.Session(sys.argv[1], device=sys.argv[2])
t2 = time.perf_counter()
answer = session.run(sys.argv[3])
t3 = time.perf_counter()
first_backend = session.backend
session.wait_until_ready()  # "auto" on a first run: until the background OpenCL build serves
ready = time.perf_counter()
session.run(sys.argv[3])
t4 = time.perf_counter()
try:
    stats = dict(importlib.import_module(f"edgeinfer.backends.{session.backend}.program_cache").STATS)
except ImportError:
    stats = {}
print(json.dumps({"backend": session.backend, "first_backend": first_backend, "import_s": t1 - t0,
                  "session_s": t2 - t1, "first_run_s": t3 - t2, "ready_s": ready - t0, "second_run_s": t4 - ready,
                  "program_cache": stats, "answer": repr(answer)[:100]}))
"""
TIMES = ("import_s", "session_s", "first_run_s", "second_run_s", "total_s", "ready_s", "process_s", "binaries_s")


def python_path() -> str:
    """The repo first, then whatever PYTHONPATH the caller had (the GPU machine's wheels live there)."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))


def cache_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEINFER_PROGRESS"}
    env.update({name: str(root / sub) for name, sub in CACHE_ENV.items()}, PYTHONPATH=python_path(), **extra)
    return env


def run_process(argv: list[str], env: dict[str, str], timeout: float, tty: bool = False) -> dict:
    """Run ``argv``: wall time, exit code, stdout, stderr (on a pseudo-terminal with ``tty``), stderr lines."""
    master, stderr_target = pty.openpty() if tty else (-1, subprocess.PIPE)
    chunks: list[bytes] = []
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr_target)
    if tty:
        os.close(stderr_target)
        reader = threading.Thread(target=_drain, args=(master, chunks), daemon=True)
        reader.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        rc = None
    seconds = time.perf_counter() - started
    if tty:
        reader.join(5)
        os.close(master)
        stderr = b"".join(chunks)
    text = stderr.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]  # splitlines splits at "\r" too
    return {"process_s": seconds, "rc": rc, "stdout": stdout.decode(errors="replace"), "stderr": text,
            "status_lines": [x for x in lines if x.startswith("edgeinfer:")],
            "foreign_lines": [x for x in lines if not x.startswith("edgeinfer:")]}  # fmt: skip


def _drain(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO once the child closed the terminal
            return
        if not data:
            return
        chunks.append(data)


def load_once(pack: Path, device: str, image: Path, root: Path, timeout: float, cold: bool) -> dict:
    """One fresh process that loads ``pack`` on ``device`` with its caches in ``root``."""
    env = cache_env(root, **({"EDGEINFER_PROGRESS": "1"} if cold else {}))
    result = run_process([sys.executable, "-c", CHILD, str(pack), device, str(image)], env, timeout)
    if result["rc"] == 0:
        result.update(json.loads(result["stdout"].strip().splitlines()[-1]))
        result["total_s"] = result["import_s"] + result["session_s"] + result["first_run_s"]
    else:
        last = (result["foreign_lines"] or ["?"])[-1]
        result["error"] = "timeout" if result["rc"] is None else f"exit {result['rc']}: {last[:200]}"
    return result


def wait_for_binaries(root: Path, timeout: float) -> float:
    """Seconds until no child building programs (a first run's build, which goes on after ``edgeinfer run`` exits)
    or storing program binaries in ``root``'s cache holds its lock (0 if none was started)."""
    started = time.perf_counter()
    cache = root / CACHE_ENV["EDGEINFER_CACHE_DIR"] / "opencl"
    # The build child starts the binaries child (and takes its lock) before it exits: wait in that order.
    for pattern in ("building-*.lock", "storing-binaries-*.lock"):
        for path in sorted(cache.glob(pattern)):
            with open(path) as lock:
                while True:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError:
                        if time.perf_counter() - started > timeout:
                            return float("nan")
                        time.sleep(0.2)
    return time.perf_counter() - started


def measure(pack: Path, device: str, image: Path, repeat: int, timeout: float) -> dict:
    """``repeat`` cold loads (each on empty caches; the median is reported), then a warm one on the last's caches
    once the binaries the cold load left to a child are stored."""
    roots = [Path(tempfile.mkdtemp(prefix="edgeinfer-first-load-")) for _ in range(repeat)]
    try:
        colds = []
        for root in roots:
            colds.append(load_once(pack, device, image, root, timeout, cold=True))
            colds[-1]["binaries_s"] = wait_for_binaries(root, timeout)
        warm = load_once(pack, device, image, roots[-1], timeout, cold=False)
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    ok = [c for c in colds if "error" not in c]
    cold = {k: statistics.median(c[k] for c in ok) for k in TIMES} if ok else {"error": colds[0]["error"]}
    if ok:
        cold["programs_compiled"] = ok[0]["program_cache"].get("compiled")
        cold["backends"] = _backends(ok[0])
    compiler_output = any(r["foreign_lines"] for r in [*colds, warm])
    return {"device": device, "cold": cold, "warm": warm, "cold_runs": colds, "compiler_output": compiler_output}


def compile_pack(model: Path, preset: str | None, out_dir: Path, *extra: str) -> tuple[Path, float]:
    pack = out_dir / (model.stem + ".pack")
    argv = [sys.executable, "-m", "edgeinfer.cli", "compile", str(model), "-o", str(pack)]
    argv += ["--preset", preset] if preset else []
    started = time.perf_counter()
    subprocess.run([*argv, *extra], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": python_path()},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return pack, time.perf_counter() - started


def cli_demo(out_dir: Path, timeout: float) -> dict:
    """The README's demo as a user types it, cold then warm, with stderr on a terminal."""
    examples = REPO / "examples" / "data"
    (out_dir / "demo").mkdir()
    labels = ["--labels", str(examples / "imagenet1000_winml.txt")]
    pack, _ = compile_pack(examples / "squeezenet1.1.onnx", "squeezenet", out_dir / "demo", *labels)
    argv = [sys.executable, "-m", "edgeinfer.cli", "run", str(pack), str(examples / "chelsea.png")]
    root = Path(tempfile.mkdtemp(prefix="edgeinfer-first-load-"))
    try:
        cold = run_process(argv, cache_env(root), timeout, tty=True)
        cold["binaries_s"] = wait_for_binaries(root, timeout)
        return {"cold": cold, "warm": run_process(argv, cache_env(root), timeout, tty=True)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def machine_header() -> list[str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    avx512f = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    head = [f"# {platform.node()}: {cpu}, {os.cpu_count()} cores, avx512f {'yes' if avx512f else 'no'}; "
            f"{time.strftime('%Y-%m-%d %H:%M')}, commit {commit.stdout.strip() or '?'}"]  # fmt: skip
    devices = subprocess.run([sys.executable, "-m", "edgeinfer.cli", "devices", "--json"], capture_output=True,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": python_path()})  # fmt: skip
    for dev in json.loads(devices.stdout or "{}").get("devices", []):
        if dev["backend"] != "cpu":
            d = dev["details"]
            head.append(f"# {dev['spec']}: {dev['name']} ({d.get('platform', '')} {d.get('version', '')}, "
                        f"driver {d.get('driver_version', '?')})")  # fmt: skip
    return head


def _backends(result: dict) -> str:
    first, last = result["first_backend"], result["backend"]
    return first if first == last else f"{first}->{last}"


def _seconds(result: dict, *keys: str) -> list[str]:
    if "error" in result:
        return [result["error"][:40], *[""] * (len(keys) - 1)]
    return [f"{result[k]:.2f}" for k in keys]


def print_table(rows: list[dict], markdown: bool) -> None:
    cols = ["model", "device", "cold session s", "cold first run s", "cold total s", "cold ready s", "cold backend",
            "programs compiled", "binaries s", "warm session s", "warm first run s", "warm backend",
            "compiler output"]  # fmt: skip
    table = []
    for r in rows:
        cold, warm = r["cold"], r["warm"]
        compiled = cold.get("programs_compiled")
        table.append([r["model"], r["device"], *_seconds(cold, "session_s", "first_run_s", "total_s", "ready_s"),
                      cold.get("backends", "-"), "-" if compiled is None else str(compiled),
                      *_seconds(cold, "binaries_s"),
                      *_seconds(warm, "session_s", "first_run_s"), _backends(warm) if "error" not in warm else "-",
                      "yes" if r["compiler_output"] else "no"])  # fmt: skip
    if markdown:
        print("| " + " | ".join(cols) + " |\n|---|---|" + "---:|" * (len(cols) - 3) + "---|")
        for cells in table:
            print("| " + " | ".join(cells) + " |")
        return
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    for cells in [cols, *table]:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=SHARED_MODELS)
    p.add_argument("--devices", default="opencl", help="comma-separated edgeinfer devices (default opencl)")
    p.add_argument("--repeat", type=int, default=1, help="cold loads per model and device; the median is reported")
    p.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    p.add_argument("--image", type=Path, default=REPO / "examples" / "data" / "chelsea.png")
    p.add_argument("--no-cli-demo", action="store_true", help="skip the README demo (edgeinfer run, cold and warm)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", type=Path, help="write every measurement, with the children's stderr, here")
    args = p.parse_args()
    compileall.compile_dir(REPO / "edgeinfer", quiet=1)  # as pip does when it installs the package
    header, rows, demo = machine_header(), [], None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_cli_demo:
            demo = cli_demo(Path(tmp), args.timeout)
            for kind, r in demo.items():
                output, last_status = "yes" if r["foreign_lines"] else "no", (r["status_lines"] or ["none"])[-1]
                print(f"README demo, {kind}: {r['process_s']:.2f} s, exit {r['rc']}, compiler output on terminal: "
                      f"{output}; last status line: {last_status}", flush=True)  # fmt: skip
        for name in args.models:
            model = SHARED / "models" / name
            if not model.exists():
                print(f"skip {name}: not found under {SHARED / 'models'}", file=sys.stderr)
                continue
            pack, seconds = compile_pack(model, PRESETS.get(name), Path(tmp))
            print(f"{name}: compiled with preset {PRESETS.get(name)} in {seconds:.1f} s (not measured)", flush=True)
            for device in args.devices.split(","):
                rows.append({"model": name, **measure(pack, device, args.image, args.repeat, args.timeout)})
                print(f"  {device}: cold total {rows[-1]['cold'].get('total_s', float('nan')):.2f} s", flush=True)
    print("\n".join(header))
    if demo:
        print(f"# README demo (edgeinfer run squeezenet.pack chelsea.png, whole process): cold "
              f"{demo['cold']['process_s']:.2f} s (binaries stored {demo['cold']['binaries_s']:.1f} s later), warm "
              f"{demo['warm']['process_s']:.2f} s, compiler output on "
              f"terminal: {'yes' if any(r['foreign_lines'] for r in demo.values()) else 'no'}")  # fmt: skip
    print_table(rows, args.markdown)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "cli_demo": demo, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
