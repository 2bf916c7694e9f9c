"""Where compiled programs are cached, one folder per GPU API: ``$EDGEINFER_CACHE_DIR/<api>`` if that variable is
set, else the user cache directory (``~/.cache/edgeinfer/<api>`` on Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def program_cache_dir(api: str) -> Path:
    override = os.environ.get("EDGEINFER_CACHE_DIR")
    if override:
        return Path(override) / api
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("edgeinfer")) / api
    except ImportError:
        return Path.home() / ".cache" / "edgeinfer" / api
