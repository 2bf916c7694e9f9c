"""Shared by the examples: compile a shipped demo model into a cached pack when no pack is given."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
CLASSIFIER = ("squeezenet1.1.onnx", "squeezenet")
DETECTOR = ("fastestdet_352.onnx", "fastestdet")


def demo_pack(model_file: str, preset: str) -> Path:
    """Path of ``examples/data/<model_file>`` compiled with ``preset``, built once into a cache folder.

    Compiling needs onnx (``pip install edgeinfer[compile]``); loading the cached pack later does not.
    """
    model = DATA / model_file
    key = hashlib.sha256(model.read_bytes() + preset.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("EDGEINFER_CACHE", Path.home() / ".cache" / "edgeinfer")) / "examples"
    pack = cache / f"{model.stem}-{preset}-{key}.pack"
    if pack.exists():
        return pack
    try:
        from edgeinfer.compiler import compile_model
    except ImportError as e:
        raise SystemExit(f"compiling the demo model needs onnx ({e}); install edgeinfer[compile] or pass --pack") from e
    from edgeinfer.pack import write_pack
    from edgeinfer.pipelines.config import bind_to_model, default_labels, resolve_pipeline

    pipeline = resolve_pipeline(preset)
    graph = compile_model(str(model), pipeline=pipeline)
    graph.metadata["pipeline"] = bind_to_model(
        graph.metadata.get("pipeline") or pipeline, {n: graph.tensors[n].shape for n in graph.inputs}
    )
    graph.metadata.setdefault("labels", default_labels(pipeline, model) or [])
    cache.mkdir(parents=True, exist_ok=True)
    # Write then rename, so that a crash never leaves a half-written pack in the cache.
    fd, tmp = tempfile.mkstemp(suffix=".pack", dir=cache)
    os.close(fd)
    try:
        write_pack(graph, tmp)
        os.replace(tmp, pack)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"compiled {model.name} with preset {preset!r} -> {pack}")
    return pack
