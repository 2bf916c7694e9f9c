"""Every CUDA program compiles with NVRTC, the compiler the CUDA backend uses at load (tests/test_cuda_sources.py
uses nvcc, whose front end accepts more: `__builtin_huge_valf`, `__shared__` on a parameter). Runs where CuPy's
NVRTC bindings find libnvrtc (the GPU machine; here with `pip install cupy-cuda13x nvidia-cuda-nvrtc`), else skips."""

from __future__ import annotations

import pytest
from test_cuda_sources import MODEL_PRESETS, VARIANTS, gpu_launches

from conftest import shared_model


def nvrtc_version() -> tuple[int, int] | None:
    try:
        from cupy_backends.cuda.libs import nvrtc

        return nvrtc.getVersion()
    except Exception:  # noqa: BLE001 - no CuPy, or no libnvrtc for it to load
        return None


pytestmark = pytest.mark.skipif(nvrtc_version() is None, reason="CuPy's NVRTC bindings or libnvrtc not available")


def test_every_template_variant_and_planned_program_compiles_with_nvrtc():
    pytest.importorskip("onnx")
    from edgeinfer.backends.cuda.program_cache import compile_cubin
    from edgeinfer.backends.cuda.sources import NVRTC_OPTIONS, program_source
    from edgeinfer.compiler import compile_model
    from edgeinfer.pipelines.config import resolve_pipeline

    programs = {(template, tuple(sorted(knobs.items()))) for template, knob_sets in VARIANTS.items()
                for knobs in knob_sets}  # fmt: skip
    for file, preset in MODEL_PRESETS.items():
        graph = compile_model(shared_model(file), pipeline=resolve_pipeline(preset) if preset else None)
        programs |= {(launch.template, tuple(sorted(launch.defines.items()))) for launch in gpu_launches(graph)}
    failures = []
    for template, knobs in sorted(programs):
        try:
            compile_cubin(program_source(template, dict(knobs)), NVRTC_OPTIONS, "90")
        except Exception as e:  # noqa: BLE001 - collected, all reported at once
            failures.append(f"{template} {dict(knobs)}: {str(e)[:400]}")
    assert not failures, "\n".join(failures)
