"""benchmarks/avx2_machine: the AVX-512 bits hidden from CPUID for a whole process (how this repo measures the AVX2
class, onnxruntime included, on an AVX-512 machine). Needs an x86 CPU with AVX-512 and CPUID faulting (the
development VM's), gcc and bash; skipped elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "avx2_machine" / "run.sh"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


pytestmark = pytest.mark.skipif(
    not {"avx512f", "cpuid_fault"} <= _cpu_flags() or not shutil.which("gcc") or not shutil.which("bash"),
    reason="needs an AVX-512 x86 CPU with CPUID faulting, gcc and bash",
)


def _run(code: str, tmp_path: Path, *python_flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "CPUID_AVX2_VERBOSE": "1"}
    return subprocess.run(["bash", str(RUN), sys.executable, *python_flags, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


FEATURES = "import numpy as np; f = np._core._multiarray_umath.__cpu_features__; print(f['AVX512F'], f['AVX2'])"


def test_numpy_sees_avx2_without_avx512(tmp_path):
    native = subprocess.run([sys.executable, "-c", FEATURES], capture_output=True, text=True, timeout=60)
    assert native.stdout.split() == ["True", "True"]
    masked = _run(FEATURES + "; import os; print(os.environ['EDGEINFER_CPU_ISA'])", tmp_path)
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.split() == ["False", "True", "avx2"]
    assert "CPUID instructions answered without AVX-512" in masked.stderr


def test_a_real_crash_still_reaches_the_programs_handler(tmp_path):
    """The shim keeps SIGSEGV for itself; a fault that is not a CPUID goes on to the program's handler (Python's
    faulthandler here), and the process still dies of it."""
    crashed = _run("import ctypes; ctypes.string_at(0)", tmp_path, "-X", "faulthandler")
    assert crashed.returncode == -11
    assert "Fatal Python error: Segmentation fault" in crashed.stderr
