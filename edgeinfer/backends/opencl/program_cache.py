"""Build OpenCL programs once: an in-process memo plus a disk cache of program binaries.

The disk key is (source hash, build options, device key, device version, driver version), so a driver
update invalidates entries by itself. The cache lives in ``$EDGEINFER_CACHE_DIR/opencl`` if that variable
is set, else in the user cache directory (``~/.cache/edgeinfer/opencl`` on Linux).

Compilers talk: PoCL's clang prints "N warnings generated." straight onto the process's stderr (file
descriptor 2, beneath Python). A build runs with that descriptor pointed at a temporary file, so a user's
terminal stays quiet; ``EDGEINFER_VERBOSE=1`` prints what was captured, and a failed build's error carries
the compiler's log (pyopencl puts it in the exception). What the user sees instead, on a terminal, while a load
compiles programs from source: one status line saying what is compiled, why and where it is cached
(``EDGEINFER_PROGRESS=1`` prints its final summary off a terminal too, ``0`` never).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pyopencl as cl

from edgeinfer.cache_dirs import program_cache_dir

# Counts since process start; tests use them to check that a second load compiles nothing. "without_binary": programs
# built from source (compiled, or served by the driver's own cache) that no binary of ours holds yet (markers on PoCL).
STATS = {"compiled": 0, "from_disk": 0, "from_memory": 0, "without_binary": 0}
MARKER_SUFFIX = ".built"  # <key>.built: built on a driver that keeps its builds itself (driver_keeps_builds)

_memo: dict[tuple[int, str], cl.Program] = {}
# File descriptor 2 is process-wide: builds that capture it take turns, so each restores what it found.
_capture_lock = threading.Lock()


@contextlib.contextmanager
def captured_compiler_output() -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file while the block runs; the list yielded receives what was
    written there (printed on stderr too when ``EDGEINFER_VERBOSE=1``)."""
    captured: list[str] = []
    with _capture_lock, tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.CompilerWarning)  # PoCL reports unperformed unroll hints as warnings
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
            if os.environ.get("EDGEINFER_VERBOSE", "") not in ("", "0") and captured[0].strip():
                print(captured[0], end="", file=sys.stderr)


def cache_dir() -> Path:
    return program_cache_dir("opencl")


def cache_key(source: str, options: str, device: cl.Device, device_key: str) -> str:
    # The device key names PoCL's forced LLVM CPU (POCL_LLVM_CPU_NAME); its builtin library is forced apart.
    kernel_library = os.environ.get("POCL_KERNELLIB_NAME", "")
    text = "\0".join([source, options, device_key, kernel_library, device.version, device.driver_version,
                       device.platform.version])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


class _Progress:
    """The status line of the programs a load compiles from source (not those found in a cache)."""

    def __init__(self) -> None:
        self.count, self.started = 0, 0.0
        self.silenced = 0  # > 0 while a caller with its own display (the tuner's bar) builds

    def mode(self) -> str:
        """ "live" (a line updated in place), "summary" (only the final line) or "off"."""
        value = os.environ.get("EDGEINFER_PROGRESS", "")
        if value == "0" or self.silenced:
            return "off"
        if sys.stderr.isatty():
            return "live"
        return "summary" if value == "1" else "off"

    def compiling(self, label: str) -> None:
        if self.count == 0:
            self.started = time.perf_counter()
        self.count += 1
        if self.mode() == "live":
            print(f"\redgeinfer: first run of these kernels on this device: compiling OpenCL program {self.count}"
                  f" ({label})...", end="", file=sys.stderr, flush=True)  # fmt: skip

    def first_enqueue(self, done: int, total: int) -> None:
        """Kernel ``done`` of ``total`` enqueued once after the load (the executor's warm-up run on PoCL)."""
        if self.count and self.mode() == "live":
            print(f"\redgeinfer: first run of these kernels on this device: compiling kernel {done} of {total} for"
                  " its work-group size...", end="", file=sys.stderr, flush=True)  # fmt: skip

    def finish(self) -> None:
        if self.count and self.mode() != "off":
            seconds = time.perf_counter() - self.started
            programs = f"{self.count} OpenCL program" + ("s" if self.count > 1 else "")
            print(f"\redgeinfer: compiled {programs} in {seconds:.1f} s (first run on this device);"
                  f" cached in {cache_dir()}, later loads skip this", file=sys.stderr, flush=True)  # fmt: skip
        self.count = 0


PROGRESS = _Progress()


@contextlib.contextmanager
def progress_silenced() -> Iterator[None]:
    """No status line from the builds in the block (a caller that shows its own progress)."""
    PROGRESS.silenced += 1
    try:
        yield
    finally:
        PROGRESS.silenced -= 1
        PROGRESS.count = 0


def finish_progress() -> None:
    """End the status line of a load that compiled programs (the executor calls it when prepared)."""
    PROGRESS.finish()


def driver_keeps_builds(device: cl.Device) -> bool:
    """Whether the driver caches builds on disk itself, so that a binary of ours would only cost time: PoCL keeps
    each program build and each compiled work-group function in its kernel cache (``POCL_CACHE_DIR``). Asking PoCL
    for a program's binary makes it compile every kernel of the program once more for a generic work-group size,
    which later loads do not use (PoCL compiles each kernel again for its work-group size at the first enqueue):
    measured on the 2-core VM, SqueezeNet's cold first load 63 s with our binaries, 24 s without, and a load from
    PoCL's cache 0.7 s (ours: 0.2 s)."""
    return device.platform.name == "Portable Computing Language"


# "1": store binaries on PoCL while building; "0": never; unset: a load stores markers and a niced child process stores
# the binaries after it (background_build.store_binaries_later; `edgeinfer prepare` stores them while building).
POCL_BINARIES_ENV = "EDGEINFER_POCL_BINARIES"


def pocl_binaries_setting() -> str:
    """``EDGEINFER_POCL_BINARIES`` as set ("0" or "1"), else "" (the default: binaries later, in the background)."""
    value = os.environ.get(POCL_BINARIES_ENV, "").strip()
    return value if value in ("0", "1") else ""


def binaries_wanted() -> bool:
    """Whether to store binaries of ours while building on a driver that keeps its builds itself (PoCL). A binary
    there costs a compile of its program's one kernel for a generic work-group size (about 1 s on the 2-core VM, even
    after the kernel ran: PoCL always compiles that variant for a binary) and makes a later load read it in 3-5 ms
    instead of rebuilding from source through PoCL's cache (45-70 ms a program): worth it when building ahead
    (``edgeinfer prepare``: :func:`storing_binaries`), not while a user waits; a load leaves that to a niced child
    process (background_build.store_binaries_later). ``EDGEINFER_POCL_BINARIES`` decides where set."""
    value = pocl_binaries_setting()
    return value == "1" if value else _storing_binaries > 0


_storing_binaries = 0


@contextlib.contextmanager
def storing_binaries() -> Iterator[None]:
    """Builds in the block store binaries on PoCL too (unless ``EDGEINFER_POCL_BINARIES=0``)."""
    global _storing_binaries
    _storing_binaries += 1
    try:
        yield
    finally:
        _storing_binaries -= 1


class ProgramNotCached(Exception):
    """A build inside :func:`cached_only` found its program in no cache (no binary of ours, no marker)."""


_cached_only = threading.local()


@contextlib.contextmanager
def cached_only() -> Iterator[None]:
    """Builds in the block, on this thread, raise :class:`ProgramNotCached` instead of compiling a program that no
    cache holds. A warm ``auto`` load tries this first (background_build.load_or_build_in_background): it plans
    the graph once, where testing every program's cache file first (``ahead.needed_programs``) planned it twice."""
    _cached_only.active = True
    try:
        yield
    finally:
        _cached_only.active = False


def build_program(
    context: cl.Context, device: cl.Device, device_key: str, source: str, options: str, label: str = ""
) -> cl.Program:
    """A built program for ``source`` with ``options``: from memory, from the disk cache (ours, or the driver's
    where it keeps builds itself: a marker file of ours then says that it was built), or compiled (``label``,
    e.g. the template's name, is what the status line shows)."""
    key = cache_key(source, options, device, device_key)
    memo_key = (id(context), key)
    if memo_key in _memo:
        STATS["from_memory"] += 1
        return _memo[memo_key]
    path = cache_dir() / f"{key}.bin"
    program = _load_binary(context, device, path, options)
    if program is None and only_cached() and not is_cached(key, device):
        raise ProgramNotCached(key)
    if program is not None:
        STATS["from_disk"] += 1
    elif driver_keeps_builds(device) and not binaries_wanted():
        marker = path.with_suffix(MARKER_SUFFIX)
        built_before = marker.is_file()
        program = _compile(context, device, source, options, label, announce=not built_before)
        STATS["from_disk" if built_before else "compiled"] += 1
        STATS["without_binary"] += 1
        if not built_before:
            _store(marker, b"built; the driver's own kernel cache holds the binary\n")
    else:
        program = _compile(context, device, source, options, label)
        STATS["compiled"] += 1
        binary = program.get_info(cl.program_info.BINARIES)[0]
        if binary:
            _store(path, binary)
    _memo[memo_key] = program
    return program


def in_memory(context: cl.Context, key: str) -> bool:
    """Whether this process holds the built program of cache key ``key`` for ``context``."""
    return (id(context), key) in _memo


def only_cached() -> bool:
    """Whether builds on this thread may only load cached programs (inside :func:`cached_only`)."""
    return getattr(_cached_only, "active", False)


def count_built_elsewhere(programs: int) -> None:
    """Count ``programs`` that helper processes built for this load (parallel_build) as compiled here, markers only."""
    STATS["compiled"] += programs
    STATS["without_binary"] += programs
    PROGRESS.count += programs


def is_cached(key: str, device: cl.Device) -> bool:
    """Whether the program of cache key ``key`` was built on ``device`` before (``edgeinfer prepare --check``)."""
    path = cache_dir() / f"{key}.bin"
    return path.is_file() or (driver_keeps_builds(device) and path.with_suffix(MARKER_SUFFIX).is_file())


def _compile(
    context: cl.Context, device: cl.Device, source: str, options: str, label: str, announce: bool = True
) -> cl.Program:
    if announce:
        PROGRESS.compiling(label or "kernels")
    with captured_compiler_output():
        return cl.Program(context, source).build(options=options, devices=[device])


def _load_binary(context: cl.Context, device: cl.Device, path: Path, options: str) -> cl.Program | None:
    if not path.is_file():
        return None
    try:
        with captured_compiler_output():
            return cl.Program(context, [device], [path.read_bytes()]).build(options=options, devices=[device])
    except cl.Error:  # stale or foreign binary: rebuild from source and overwrite it
        return None


def _store(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    except OSError:  # a read-only cache dir only costs a rebuild next time
        pass
