"""A first load that would compile serves from NumPy while the OpenCL programs build in the background (issue 17).

``Session(pack)`` with ``device="auto"`` that resolves to an OpenCL device whose programs for the pack are not all
in the disk cache starts on the NumPy backend at once (a cold OpenCL load compiles for 17-51 s on PoCL on a 2-core
VM; NumPy answers within a second and runs these models only 1.3-2x slower). A child process,
``python -m edgeinfer.cli prepare PACK --device D``, fills the program cache; a daemon thread waits for it, then
loads the OpenCL executable (and its image pre-processor) from the now warm cache, and the Session switches to it at
its next run boundary. ``EDGEINFER_BACKGROUND_BUILD=0`` keeps the blocking load.

Why a child process and not a build in a thread: the compiler's output is captured by pointing file descriptor 2
at a file while a program builds (program_cache), which in a thread would swallow whatever the user's program
writes to stderr for the whole 17-51 s; the child's stderr is its own. A thread would not have cost NumPy frames
through the GIL (pyopencl releases it in clBuildProgram; measured in docs/program-cache.md), only through the shared
cores, as the child does.

If the process exits (or the Session is closed or collected) mid-build, the child is stopped: the cache keeps the
programs that finished (each is written whole, then renamed), and the next load builds only the rest. ``edgeinfer
run`` instead detaches it (:meth:`BackgroundBuild.detach`): the command ends with its answer and the child finishes
the cache on its own.

Binaries later (PoCL): a load that built programs from source without storing binaries of ours (markers only, so as
not to make the user wait for a second compile of each kernel) starts ``edgeinfer prepare PACK --low-priority`` in a
detached child at nice 19 (:func:`store_binaries_later`), which stores them: the next load reads binaries (warm
SqueezeNet 0.3 s instead of 1.2 s). It outlives the process that started it, so that a one-shot command fills the
cache too; a lock file held for its lifetime keeps a second one from starting for the same pack and device.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeinfer.backends.base import Executable
from edgeinfer.ir import Graph

ENV = "EDGEINFER_BACKGROUND_BUILD"  # "0": a first "auto" load that has to compile blocks until it has


@dataclass
class Prepared:
    """What the Session switches to: the OpenCL executable and, for an image pack, its device pre-processor."""

    executable: Executable
    preprocessor: Any | None


def prepare_command(pack: Path, device: str) -> list[str]:
    """The child that fills the program cache for ``pack`` on ``device`` (tests replace it): markers only on PoCL
    (binaries would double the time until OpenCL takes over), then it starts the child that stores them."""
    return [sys.executable, "-m", "edgeinfer.cli", "prepare", str(pack), "--device", device, "--binaries-later"]


def load_or_build_in_background(
    pack: Path, graph: Graph, backend: ModuleType, device: str
) -> tuple[Executable | None, BackgroundBuild | None]:
    """For ``device="auto"``: (the OpenCL executable of ``graph``, None) when every program it needs is cached (planned
    and loaded once); (None, a background build) when one is not and ``EDGEINFER_BACKGROUND_BUILD`` is not ``0``;
    (None, None) where the load should go ahead as it is (another backend, or blocking)."""
    if backend.NAME != "opencl" or os.environ.get(ENV, "1").strip() == "0":
        return None, None
    from edgeinfer.backends.opencl import program_cache
    from edgeinfer.backends.opencl.ahead import needed_programs

    try:
        with program_cache.cached_only():
            return backend.prepare(graph, device), None
    except program_cache.ProgramNotCached:
        pass
    keys, opencl_device = needed_programs(graph, device)
    return None, BackgroundBuild(pack, graph, backend, device, keys, opencl_device.device)


class BackgroundBuild:
    """The child that fills the cache, and the daemon thread that then loads the OpenCL executable from it."""

    def __init__(self, pack: Path, graph: Graph, backend: ModuleType, device: str, keys: set[str], cl_device: Any):
        from edgeinfer.backends.opencl import program_cache

        self.backend, self.device = backend.NAME, device
        self.needed = len(keys)
        self.error = ""  # why the build failed, once it has
        self.prepared: Prepared | None = None
        self._keys, self._cl_device = keys, cl_device
        self._cancelled = False
        self._done = threading.Event()
        self._log = tempfile.TemporaryFile()  # the child's stderr: its last line explains a failure
        # The child holds a lock file while it builds: what waits for it from outside (benchmarks/first_load.py)
        # sees when it is done, also once detached. Where another process's build holds it already (a second
        # `edgeinfer run` while the first one's detached build goes on), the child only waits for that build to
        # end, and this process then loads from the cache it filled, instead of compiling everything twice.
        lock_path = program_cache.cache_dir() / f"building-{_pack_device_hash(pack, device)}.lock"
        lock = _try_lock(lock_path)
        self.waits_for_another = lock is None and _held_elsewhere(lock_path)
        command = wait_for_lock_command(lock_path) if self.waits_for_another else prepare_command(pack, device)
        try:
            self._child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=self._log, env=_child_env(),
                                           pass_fds=() if lock is None else (lock,))  # fmt: skip
        finally:
            if lock is not None:
                os.close(lock)
        # At interpreter exit (or when this object goes), stop the child rather than leave it compiling unowned
        # (unless detached: a one-shot command lets it fill the cache).
        self._stop_at_exit = weakref.finalize(self, _stop, self._child)
        self._detached = False
        if program_cache.PROGRESS.mode() != "off":  # one whole line, before the user's output, never updated
            missing = self.needed - self.cached()
            whose = "another process builds them" if self.waits_for_another else "they build in the background"
            print(f"edgeinfer: first run of this model on {device}: answering from NumPy while {missing} OpenCL"
                  f" programs are missing and {whose}; cached in {program_cache.cache_dir()}",
                  file=sys.stderr, flush=True)  # fmt: skip
        # The thread reads the pack anew: planning must not share a Graph with the NumPy executable serving runs.
        threading.Thread(target=self._finish, args=(pack, backend), name="edgeinfer-opencl-build", daemon=True).start()

    def cached(self) -> int:
        """How many of the programs the disk cache holds now."""
        from edgeinfer.backends.opencl.ahead import count_cached

        return count_cached(self._keys, self._cl_device)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the build has finished (or failed); False if ``timeout`` seconds passed first."""
        return self._done.wait(timeout)

    def cancel(self) -> None:
        """Stop the child (unless detached); the thread drops what it was loading. The cache keeps what finished."""
        self._cancelled = True
        if not self._detached:
            _stop(self._child)

    def detach(self) -> bool:
        """Let the child go on filling the cache after this process exits, on its own (``edgeinfer run``: the command
        ends with its answer, and the next run finds the programs built); False if it had finished already. The
        child still starts the niced one that stores binaries (:func:`prepare_command`)."""
        if self._child.poll() is not None:
            return False
        self._detached = True
        self._stop_at_exit.detach()
        return True

    def describe(self) -> str:
        if self.error:
            return f"cpu (NumPy): the OpenCL build for {self.device} failed: {self.error}"
        if self.prepared is not None:
            return f"cpu (NumPy) until the next run, then {self.device} (built)"
        return f"cpu (NumPy) while OpenCL builds for {self.device} ({self.cached()} of {self.needed} programs cached)"

    def _finish(self, pack: Path, backend: ModuleType) -> None:
        from edgeinfer.backends.opencl import program_cache
        from edgeinfer.pack import read_pack

        try:
            returncode = self._child.wait()
            if self._cancelled:
                return
            if returncode != 0:
                raise RuntimeError(f"`edgeinfer prepare` exited with {returncode}: {self._last_log_line()}")
            graph = read_pack(pack)
            pipeline = graph.metadata.get("pipeline")
            # From the warm cache; should a program compile after all (a binary the driver refused), no status line
            # is drawn from this thread over the program's output.
            with program_cache.progress_silenced():
                executable = backend.prepare(graph, self.device)
                preprocessor = executable.device_preprocessor(pipeline) if pipeline else None
            if self._cancelled:
                executable.close()
                return
            self.prepared = Prepared(executable, preprocessor)
        except Exception as e:  # noqa: BLE001 - the Session keeps serving from NumPy and shows the reason
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self._log.close()
            self._done.set()

    def _last_log_line(self) -> str:
        self._log.seek(0)
        lines = [line for line in self._log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip()[:300] if lines else "no output"


def _child_env(pocl_binaries: str = "") -> dict[str, str]:
    """The parent's environment, with this edgeinfer importable first, the child's status line off and
    ``EDGEINFER_POCL_BINARIES`` set to ``pocl_binaries`` where given."""
    package_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "EDGEINFER_PROGRESS": "0"}
    return {**env, "EDGEINFER_POCL_BINARIES": pocl_binaries} if pocl_binaries else env


def _pack_device_hash(pack: Path, device: str) -> str:
    return hashlib.sha256(f"{Path(pack).resolve()}\0{device}".encode()).hexdigest()[:16]


def programs_without_binary() -> int:
    """How many programs this process built from source that no binary of ours holds yet (program_cache's
    ``STATS["without_binary"]``; 0 while the OpenCL backend is not even imported)."""
    program_cache = sys.modules.get("edgeinfer.backends.opencl.program_cache")
    return program_cache.STATS["without_binary"] if program_cache is not None else 0


def store_binaries_command(pack: Path, device: str) -> list[str]:
    """The child that stores the binaries of ``pack``'s programs on ``device`` (tests replace it)."""
    return [sys.executable, "-m", "edgeinfer.cli", "prepare", str(pack), "--device", device, "--low-priority"]


def store_binaries_later(pack: Path, device: str) -> subprocess.Popen | None:
    """Start a detached child at the lowest CPU priority that stores binaries of ``pack``'s programs on ``device``,
    after a load that left markers only (PoCL, ``EDGEINFER_POCL_BINARIES`` unset); None where none was started: the
    setting says no, or such a child already runs for this pack and device (it holds the lock file). The child's
    output goes nowhere (it is no one's to read), and it is not stopped when this process exits."""
    from edgeinfer.backends.opencl import program_cache

    if program_cache.pocl_binaries_setting():  # "0": never; "1": the load stored them already
        return None
    lock = _try_lock(program_cache.cache_dir() / f"storing-binaries-{_pack_device_hash(pack, device)}.lock")
    if lock is None:
        return None
    try:  # the child inherits the locked descriptor and holds the lock until it exits
        return subprocess.Popen(store_binaries_command(Path(pack), device), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_child_env("1"),
                                start_new_session=True, pass_fds=(lock,))  # fmt: skip
    except OSError:  # no binaries this time; the next load tries again
        return None
    finally:
        os.close(lock)


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding an exclusive lock on it, or None if another holds it (or no lock can
    be taken: a read-only cache directory, a system without ``fcntl``)."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _held_elsewhere(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` (not: the lock could not be taken at all)."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDWR)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False  # free again: the other build has just ended (this process's load finds its programs cached)


def wait_for_lock_command(path: Path) -> list[str]:
    """A child that exits once the lock on ``path`` is free (another process's build of the same pack has ended)."""
    code = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX)"
    return [sys.executable, "-c", code, str(path)]


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
