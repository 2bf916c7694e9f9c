"""Packaging for edgeinfer.

The kernel templates (``kernels/``) and tuned config tables (``tuned_configs/``) live at the repository
root so that they are easy to find and edit; a build copies them into the package as
``edgeinfer/_data/`` so that a plain (non-editable) install carries them too.

``kernels/cpu/conv_hwc.c`` builds the NumPy backend's native kernels (``edgeinfer._cpu_kernels``, loaded
with ctypes). The extension is optional: where it does not build (no C compiler, MSVC) the install still
succeeds and the backend runs pure NumPy (``edgeinfer devices`` says which).
"""

import shutil
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
DATA_DIRS = ("kernels", "tuned_configs")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        for name in DATA_DIRS:
            target = Path(self.build_lib) / "edgeinfer" / "_data" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target)


setup(
    name="edgeinfer",
    version="0.1.0",
    description="Embeddable CNN inference runtime: ONNX compiled to .pack, run on OpenCL GPUs or NumPy",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["edgeinfer", "edgeinfer.*"]),
    cmdclass={"build_py": BuildWithData},
    ext_modules=[
        Extension(
            "edgeinfer._cpu_kernels",
            sources=["kernels/cpu/conv_hwc.c"],
            depends=["kernels/cpu/conv_hwc_isa.h", "kernels/cpu/im2col_isa.h"],  # (included once per ISA build)
            extra_compile_args=["-O3", "-Wno-psabi"],
            optional=True,
        )
    ],
    install_requires=["numpy>=2.1", "pillow>=9"],
    extras_require={
        "compile": ["onnx>=1.14"],
        "opencl": ["pyopencl>=2023.1", "platformdirs>=3"],
        "cuda": ["cupy-cuda12x>=13"],
        # edgeinfer tune: the learned cost model (gradient-boosted trees) and its progress bar
        "tune": ["scikit-learn>=1.3", "tqdm>=4.60"],
        "test": [
            "pytest>=7",
            "hypothesis>=6",  # tests/test_pack_fuzz.py
            "setuptools>=68",
            "wheel",
            "onnx>=1.14",
            "onnxruntime>=1.16",
            "pyopencl>=2023.1",
            "platformdirs>=3",
            "ruff",
            "scikit-learn>=1.3",
            "tqdm>=4.60",
        ],
    },
    entry_points={"console_scripts": ["edgeinfer=edgeinfer.cli:main"]},
)
