"""Repository promises: CI runs exactly the README's test command; the package data travels in a wheel; ops/ is the
plain reference."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command.strip() in ci_lines


@pytest.mark.skipif(not (REPO / "setup.py").exists(), reason="no setup.py")
def test_wheel_carries_kernels_and_tuned_configs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("edgeinfer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    if shutil.which("cc") or shutil.which("gcc"):  # the optional native kernels build where a compiler is
        assert any(n.startswith("edgeinfer/_cpu_kernels.") for n in names), "native kernels missing from the wheel"
    for folder in ("kernels/opencl", "kernels/cpu", "tuned_configs/opencl"):
        sources = sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*") if p.is_file())
        assert sources, f"{folder} is empty"
        for src in sources:
            assert f"edgeinfer/_data/{src}" in names, f"{src} missing from the wheel"


@pytest.mark.skipif(sys.platform == "win32" or not (REPO / "setup.py").exists(), reason="CC is a Unix setting")
def test_wheel_builds_without_a_c_compiler(tmp_path):
    """The native kernels are optional: with no working compiler the wheel still builds, without them."""
    src = tmp_path / "src"  # a copy without the build/ folder, whose compiled kernels setuptools would reuse
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("edgeinfer", "kernels", "tuned_configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = {**os.environ, "CC": "false"}
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(src)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("edgeinfer-*.whl"))).namelist()
    assert not any(n.startswith("edgeinfer/_cpu_kernels.") for n in names)
    assert "edgeinfer/backends/numpy/native_kernels.py" in names


# attributes the NumPy backend once injected into nodes to steer the ops; its choices are now executor state
BACKEND_KEYS = {"channels_last", "native_kernels", "native_cache", "packed_weights", "row_padded", "out"}


def test_ops_are_the_plain_reference_without_backend_imports_or_keys():
    """edgeinfer/ops/ (constant folding, the host fallback, the tests' reference) imports no backend and reads no
    backend key: the NumPy backend keeps its choices per node (backends/numpy/executor.py)."""
    for path in sorted((REPO / "edgeinfer" / "ops").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("edgeinfer.backends") for n in names), f"{path.name} imports {names}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in BACKEND_KEYS, f"{path.name}:{node.lineno} reads {node.value!r}"


def module_imports() -> dict[str, set[str]]:
    """edgeinfer module -> the edgeinfer modules it imports at module level (``from pkg import sub`` names the
    submodule when ``sub`` is one, else the package)."""
    package = REPO / "edgeinfer"
    paths = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    imports: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                imports[name] |= {alias.name for alias in node.names if alias.name in paths}
            elif isinstance(node, ast.ImportFrom) and node.module in paths and node.level == 0:
                for alias in node.names:
                    imports[name].add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in paths
                                      else node.module)  # fmt: skip
        imports[name].discard(name)
    return imports


def test_no_import_circle_among_modules():
    """Issue 14: a registry lives in its own module that the members import (ops/registry.py, planning/registry.py),
    never in the package that imports its members."""
    imports = module_imports()
    assert len(imports) > 50
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name) :] + [name]))
        if name in done:
            return
        for other in sorted(imports[name]):
            visit(other, [*path, name])
        done.add(name)

    for name in sorted(imports):
        visit(name, [])
