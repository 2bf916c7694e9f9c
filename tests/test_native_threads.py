"""The native kernels' two-thread rows (``kernels/cpu/row_threads.h``): the same results on one thread and on two,
from concurrent Python threads, and in a forked child (which has no worker thread)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from test_native_kernels import channels_last, isa  # noqa: F401 (isa: the fixture running each ISA build)

from edgeinfer.backends.numpy import native_kernels
from edgeinfer.backends.numpy.kernels import NodeState, conv, max_pool
from edgeinfer.ops import OPS

needs_native = pytest.mark.skipif(not native_kernels.available(), reason=f"native kernels: {native_kernels.status()}")

POOL = {"kernel_shape": [3, 3], "strides": [2, 2]}  # SqueezeNet's first pool, big enough for two threads


def _big_layers(rng: np.random.Generator) -> list[tuple[str, list[np.ndarray], dict]]:
    """(op, inputs, attrs) of layers whose kernel calls split their rows: a pool, a depthwise conv with its
    activation in the kernel, an im2col conv and a 1x1 conv with the native epilogue (bias + SiLU)."""
    x64 = channels_last(rng.standard_normal((1, 64, 111, 111), dtype=np.float32))
    x32 = channels_last(rng.standard_normal((1, 32, 57, 57), dtype=np.float32))
    x16 = channels_last(rng.standard_normal((1, 16, 55, 55), dtype=np.float32))
    dw = [x32, rng.standard_normal((32, 1, 3, 3), dtype=np.float32), rng.standard_normal(32, dtype=np.float32)]
    full = [x16, rng.standard_normal((48, 16, 3, 3), dtype=np.float32), rng.standard_normal(48, dtype=np.float32)]
    point = [x16, rng.standard_normal((64, 16, 1, 1), dtype=np.float32), rng.standard_normal(64, dtype=np.float32)]
    return [
        ("MaxPool", [x64], POOL),
        ("Conv", dw, {"group": 32, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "activation": "clip",
                      "activation_params": [0.0, 6.0]}),
        ("Conv", full, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "activation": "relu"}),
        ("Conv", point, {"kernel_shape": [1, 1], "activation": "silu"}),
    ]  # fmt: skip


def _run(op: str, inputs: list[np.ndarray], attrs: dict) -> np.ndarray:
    kernel = max_pool if op == "MaxPool" else conv
    return np.ascontiguousarray(kernel(inputs, attrs, NodeState(native=True, cache={}))[0])


@pytest.fixture
def two_threads():
    yield
    native_kernels.set_threads(2)


def test_one_thread_and_two_agree_exactly(isa: str, two_threads) -> None:  # noqa: F811
    for op, inputs, attrs in _big_layers(np.random.default_rng(1)):
        assert native_kernels.set_threads(2) == 2
        split = _run(op, inputs, attrs)
        assert native_kernels.set_threads(1) == 1
        np.testing.assert_array_equal(split, _run(op, inputs, attrs), err_msg=f"{op} {attrs}")
        expected = OPS[op].fn([np.ascontiguousarray(a) for a in inputs], attrs)[0]
        np.testing.assert_allclose(split, expected, rtol=1e-4, atol=1e-4, err_msg=f"{op} {attrs}")


@needs_native
def test_concurrent_callers_get_their_own_results() -> None:
    """Python threads call the kernels at once (ctypes lets go of the GIL): one has the worker, the rest run alone."""
    rng = np.random.default_rng(2)
    images = [channels_last(rng.standard_normal((1, 64, 111, 111), dtype=np.float32)) for _ in range(4)]
    expected = [OPS["MaxPool"].fn([np.ascontiguousarray(x)], POOL)[0] for x in images]
    errors: list[str] = []

    def hammer(k: int) -> None:
        for _ in range(20):
            if not np.array_equal(_run("MaxPool", [images[k]], POOL), expected[k]):
                errors.append(f"thread {k}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@needs_native
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork")
def test_a_forked_child_runs_the_kernels_without_the_parents_worker() -> None:
    code = (
        "import os, numpy as np\n"
        "from edgeinfer.backends.numpy.kernels import NodeState, max_pool\n"
        "from edgeinfer.ops import OPS\n"
        "x = np.random.default_rng(0).standard_normal((1, 111, 111, 64), dtype=np.float32).transpose(0, 3, 1, 2)\n"
        "a = {'kernel_shape': [3, 3], 'strides': [2, 2]}\n"
        "want = OPS['MaxPool'].fn([np.ascontiguousarray(x)], a)[0]\n"
        "assert np.array_equal(max_pool([x], a, NodeState(native=True))[0], want)  # (starts the worker)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = all(np.array_equal(max_pool([x], a, NodeState(native=True))[0], want) for _ in range(5))\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child', os.waitstatus_to_exitcode(status))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "child 0", out.stdout + out.stderr
