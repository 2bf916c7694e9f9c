"""A launch's knobs as OpenCL build options (the template text itself: edgeinfer/planning/templates.py)."""

from __future__ import annotations

from typing import Any


def build_options(defines: dict[str, Any]) -> str:
    return " ".join(f"-D{key}={value}" for key, value in sorted(defines.items()))
