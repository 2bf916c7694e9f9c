"""Build and check a pipeline dict: preset, then a JSON/TOML/YAML file, then overrides.

The result is a plain JSON-able dict (documented key by key in ``docs/pipelines.md``) that the compiler
stores in the pack as ``graph.metadata["pipeline"]``. Validation fills every optional key with its
default so that the run-time code reads keys directly, and rejects unknown keys (typos) by name.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from edgeinfer.errors import PipelineError
from edgeinfer.pipelines.presets import get_preset

TASKS = ("classification", "detection")
RESIZE_MODES = ("plain", "centre-crop", "square-crop", "letterbox-topleft", "letterbox-centre")
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "uint8")
DECODERS = ("yolox", "fastestdet", "ssd", "yolo-anchors")

# Optional keys and their defaults; "input" and "size" are filled by bind_to_model.
_COMMON_DEFAULTS: dict[str, Any] = {
    "input": None,
    "size": None,
    "resize": "plain",
    "pad_value": 114,
    "channel_order": "RGB",
    "scale": 1.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "layout": "NCHW",
    "dtype": "float32",
}
_CLASSIFICATION_DEFAULTS: dict[str, Any] = {
    "top_k": 5,
    "softmax": False,
    "output": None,  # graph output holding the class scores; None = the first output
    "output_scale": None,  # dequantise integer scores: (q - output_zero_point) * output_scale
    "output_zero_point": 0,
}
_DETECTION_DEFAULTS: dict[str, Any] = {
    "score_threshold": 0.5,
    "nms_iou": 0.45,
    "class_aware": False,
    "max_detections": 100,
}
_DECODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "yolox": {"strides": [8, 16, 32], "score": "obj*cls", "output": None},
    "fastestdet": {"obj_power": 0.6, "cls_power": 0.4, "output": None},
    "ssd": {
        "scores_output": None,
        "boxes_output": None,
        "box_format": "x1y1x2y2",
        "normalized": True,
        "background_class": 0,
        "priors": None,
        "variances": [0.1, 0.2],
    },
    "yolo-anchors": {"strides": None, "anchors": None, "outputs": None, "formula": "v5", "sigmoid": True},
}
_LABEL_KEYS = {"labels_file": None, "labels": None}


def resolve_pipeline(
    preset: str | None = None, pipeline_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return a validated pipeline: ``preset``, updated by ``pipeline_file``, updated by ``overrides``.

    The file may itself name a ``"preset"`` to tune. Override keys may be dotted (``"decoder.score"``).
    """
    file_data = _read_pipeline_file(pipeline_file) if pipeline_file else {}
    file_preset = file_data.pop("preset", None)
    if preset and file_preset and preset != file_preset:
        raise PipelineError(f"preset {preset!r} given, but {pipeline_file} tunes preset {file_preset!r}")
    name = preset or file_preset
    pipeline: dict[str, Any] = get_preset(name) if name else {}
    _deep_update(pipeline, file_data)
    for key, value in (overrides or {}).items():
        _set_dotted(pipeline, key, value)
    if not pipeline:
        raise PipelineError("no pipeline: give a preset, a pipeline file or overrides")
    return validate_pipeline(pipeline)


def validate_pipeline(pipeline: dict[str, Any]) -> dict[str, Any]:
    """Check every key of ``pipeline`` and return a copy with all defaults filled in."""
    p = copy.deepcopy(pipeline)
    task = p.get("task")
    _check_choice("task", task, TASKS)
    defaults = {**_COMMON_DEFAULTS, **_LABEL_KEYS}
    defaults.update(_CLASSIFICATION_DEFAULTS if task == "classification" else _DETECTION_DEFAULTS)
    allowed = set(defaults) | {"task"} | ({"decoder"} if task == "detection" else set())
    unknown = sorted(set(p) - allowed)
    if unknown:
        raise PipelineError(f"unknown pipeline key(s) {unknown} for task {task!r}; expected some of {sorted(allowed)}")
    for key, value in defaults.items():
        p.setdefault(key, copy.deepcopy(value))

    if p["size"] is not None:
        p["size"] = _int_list("size", p["size"], 2, minimum=1)
    _check_choice("resize", p["resize"], RESIZE_MODES)
    _check_choice("channel_order", p["channel_order"], CHANNEL_ORDERS)
    _check_choice("layout", p["layout"], LAYOUTS)
    _check_choice("dtype", p["dtype"], DTYPES)
    p["pad_value"] = _number("pad_value", p["pad_value"], 0, 255)
    p["scale"] = _number("scale", p["scale"])
    p["mean"] = _per_channel("mean", p["mean"])
    p["std"] = _per_channel("std", p["std"])
    if any(s == 0 for s in p["std"]):
        raise PipelineError(f"pipeline key 'std' must be non-zero, got {p['std']}")
    if p["labels"] is not None and not (isinstance(p["labels"], list) and all(isinstance(s, str) for s in p["labels"])):
        raise PipelineError("pipeline key 'labels' must be a list of strings")

    if task == "classification":
        p["top_k"] = _int("top_k", p["top_k"], minimum=1)
        p["softmax"] = _bool("softmax", p["softmax"])
    else:
        p["decoder"] = _validate_decoder(p.get("decoder"))
        p["score_threshold"] = _number("score_threshold", p["score_threshold"], 0.0, 1.0)
        p["nms_iou"] = _number("nms_iou", p["nms_iou"], 0.0, 1.0)
        p["class_aware"] = _bool("class_aware", p["class_aware"])
        p["max_detections"] = _int("max_detections", p["max_detections"], minimum=1)
    return p


def bind_to_model(pipeline: dict[str, Any], input_shapes: dict[str, list[int] | tuple[int, ...]]) -> dict[str, Any]:
    """Fill ``input`` and ``size`` from the model's inputs (name -> shape; 0 or None for a dynamic dim).

    A static model input size wins over the preset's default size: the network accepts nothing else.
    """
    p = dict(pipeline)
    name = p.get("input") or next(iter(input_shapes), None)
    if name not in input_shapes:
        raise PipelineError(f"pipeline input {name!r} is not a model input; the model has {list(input_shapes)}")
    p["input"] = name
    shape = list(input_shapes[name])
    if len(shape) != 4:
        raise PipelineError(f"image input {name!r} must be 4-D ({p['layout']}), the model has shape {shape}")
    h, w, c = (shape[2], shape[3], shape[1]) if p["layout"] == "NCHW" else (shape[1], shape[2], shape[3])
    if c not in (3, None, 0):
        raise PipelineError(f"input {name!r} has {c} channels in layout {p['layout']}, expected 3 (shape {shape})")
    if h and w:
        p["size"] = [int(h), int(w)]
    if p.get("size") is None:
        raise PipelineError(f"input {name!r} has a dynamic size {shape}: set the pipeline key 'size' [h, w]")
    return p


def load_labels(path: str | Path) -> list[str]:
    """Read a labels file: one name per line, or ``idx,name`` lines (the name may contain commas)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    indexed = [re.match(r"^\s*(\d+)\s*,(.*)$", line) for line in lines]
    if lines and all(indexed):
        table = {int(m.group(1)): m.group(2).strip() for m in indexed if m}
        return [table.get(i, str(i)) for i in range(max(table) + 1)]
    return [line.strip() for line in lines]


def default_labels(pipeline: dict[str, Any], model_path: str | Path | None = None) -> list[str] | None:
    """The pipeline's inline ``labels``, else its ``labels_file`` found next to ``model_path``, else None."""
    if pipeline.get("labels"):
        return list(pipeline["labels"])
    name = pipeline.get("labels_file")
    if name and model_path is not None:
        candidate = Path(model_path).parent / name
        if candidate.is_file():
            return load_labels(candidate)
    return None


def _validate_decoder(decoder: Any) -> dict[str, Any]:
    if not isinstance(decoder, dict):
        raise PipelineError(f"a detection pipeline needs a 'decoder' dict with a 'type' in {DECODERS}")
    kind = decoder.get("type")
    _check_choice("decoder.type", kind, DECODERS)
    defaults = _DECODER_DEFAULTS[kind]
    unknown = sorted(set(decoder) - set(defaults) - {"type"})
    if unknown:
        raise PipelineError(f"unknown key(s) {unknown} for decoder {kind!r}; expected some of {sorted(defaults)}")
    d = {"type": kind, **copy.deepcopy(defaults), **decoder}
    if kind == "yolox":
        d["strides"] = _int_list("decoder.strides", d["strides"], None, minimum=1)
        _check_choice("decoder.score", d["score"], ("obj*cls", "cls"))
    elif kind == "fastestdet":
        d["obj_power"] = _number("decoder.obj_power", d["obj_power"])
        d["cls_power"] = _number("decoder.cls_power", d["cls_power"])
    elif kind == "ssd":
        _check_choice("decoder.box_format", d["box_format"], ("x1y1x2y2", "cxcywh"))
        d["normalized"] = _bool("decoder.normalized", d["normalized"])
        if d["background_class"] is not None:
            d["background_class"] = _int("decoder.background_class", d["background_class"], minimum=0)
        d["variances"] = [_number("decoder.variances", v) for v in d["variances"]]
        if d["priors"] is not None:
            _validate_priors(d["priors"])
    else:
        d["strides"] = _int_list("decoder.strides", d["strides"], None, minimum=1)
        anchors = d["anchors"]
        if not (isinstance(anchors, list) and len(anchors) == len(d["strides"])):
            raise PipelineError("decoder.anchors must hold one list of (w, h) pixel pairs per stride")
        for a in anchors:
            if not (isinstance(a, list) and a and len(a) % 2 == 0):
                raise PipelineError(f"decoder.anchors entry {a!r} must be a flat list [w0, h0, w1, h1, ...]")
        _check_choice("decoder.formula", d["formula"], ("v3", "v5"))
        d["sigmoid"] = _bool("decoder.sigmoid", d["sigmoid"])
    return d


def _validate_priors(priors: Any) -> None:
    if isinstance(priors, dict):
        if set(priors) != {"strides", "min_sizes"} or len(priors["strides"]) != len(priors["min_sizes"]):
            raise PipelineError("decoder.priors must be {'strides': [...], 'min_sizes': [[...] per stride]}")
    elif not (isinstance(priors, list) and all(isinstance(p, list) and len(p) == 4 for p in priors)):
        raise PipelineError("decoder.priors must be a generator dict or a list of [cx, cy, w, h] (normalised)")


def _read_pipeline_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise PipelineError(f"{path}: YAML pipelines need PyYAML; use JSON or TOML instead") from None
            data = yaml.safe_load(text)
        else:
            raise PipelineError(f"{path}: unknown pipeline file type {suffix!r}; expected .json, .toml, .yaml")
    except PipelineError:
        raise
    except Exception as e:  # each parser has its own error class; report them all the same way
        raise PipelineError(f"{path}: cannot parse pipeline file: {e}") from e
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: a pipeline file must hold a mapping of keys, got {type(data).__name__}")
    return data


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _set_dotted(p: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        p = p.setdefault(part, {})
        if not isinstance(p, dict):
            raise PipelineError(f"override {key!r}: {part!r} is not a mapping")
    if isinstance(value, dict) and isinstance(p.get(last), dict):
        _deep_update(p[last], value)
    else:
        p[last] = copy.deepcopy(value)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PipelineError(f"pipeline key {key!r} is {value!r}; expected one of {list(choices)}")


def _number(key: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PipelineError(f"pipeline key {key!r} must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise PipelineError(f"pipeline key {key!r} must lie in [{lo}, {hi}], got {value}")
    return float(value)


def _int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise PipelineError(f"pipeline key {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PipelineError(f"pipeline key {key!r} must be true or false, got {value!r}")
    return value


def _int_list(key: str, value: Any, length: int | None, minimum: int | None = None) -> list[int]:
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        raise PipelineError(f"pipeline key {key!r} must be a list of {length or 'some'} integers, got {value!r}")
    return [_int(key, v, minimum) for v in value]


def _per_channel(key: str, value: Any) -> list[float]:
    values = [value] * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise PipelineError(f"pipeline key {key!r} must be a number or a list of 3 numbers, got {value!r}")
    return [_number(key, v) for v in values]
