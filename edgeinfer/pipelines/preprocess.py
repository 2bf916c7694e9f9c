"""Turn an image into the network's input tensor, as the reference pipelines do.

Every resize is PIL ``Image.resize(..., Image.BILINEAR)`` on the RGB image (``../shared/models/README.md``):
other resamplers move scores by more than the 0.01 the accuracy tests allow. The returned context says
how original-image pixels map to network-input pixels, ``net = orig * scale_xy + offset_xy``, so that
post-processing can map boxes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ImageLike = np.ndarray | str | Path | Image.Image


def load_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from an HxWx3 uint8 RGB array, a path or a PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        return Image.fromarray(np.ascontiguousarray(image), "RGB")
    raise TypeError(f"image must be an HxWx3 uint8 array, a path or a PIL image, got {type(image).__name__}")


@dataclass(frozen=True)
class Geometry:
    """Where the network input comes from: a source crop, resized, of which a window is placed on the canvas.

    ``src`` (x, y, w, h) is the integer crop of the frame that PIL resizes to ``resized`` (w, h);
    ``window`` (x, y) is the top-left of the part of the resized image that is kept (centre-crop);
    ``place`` (x, y, w, h) is where that part lands on the ``out`` (w, h) canvas, the rest being padding.
    """

    src: tuple[int, int, int, int]
    resized: tuple[int, int]
    window: tuple[int, int]
    place: tuple[int, int, int, int]
    out: tuple[int, int]
    context: dict[str, Any]


def geometry(w: int, h: int, pipeline: dict[str, Any]) -> Geometry:
    """The resize plan and coordinate context for a ``w`` x ``h`` frame: one definition that the PIL path
    (``resize_image``) and the OpenCL kernels (``backends/opencl/preprocess.py``) both follow."""
    out_h, out_w = pipeline["size"]
    mode = pipeline["resize"]
    src, window, place = (0, 0, w, h), (0, 0), (0, 0, out_w, out_h)
    if mode == "plain":
        resized = (out_w, out_h)
        sx, sy, ox, oy = out_w / w, out_h / h, 0.0, 0.0
    elif mode == "square-crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        src, resized = (left, top, side, side), (out_w, out_h)
        sx, sy = out_w / side, out_h / side
        ox, oy = -left * sx, -top * sy
    elif mode == "centre-crop":
        # Short side to size*256/224 (the ImageNet convention), then the centred size x size window.
        short = round(min(out_h, out_w) * 256 / 224)
        r = short / min(w, h)
        nw, nh = max(out_w, round(w * r)), max(out_h, round(h * r))
        left, top = (nw - out_w) // 2, (nh - out_h) // 2
        resized, window = (nw, nh), (left, top)
        sx, sy, ox, oy = nw / w, nh / h, -float(left), -float(top)
    elif mode in ("letterbox-topleft", "letterbox-centre"):
        r = min(out_w / w, out_h / h)
        nw, nh = int(w * r), int(h * r)
        left, top = (0, 0) if mode == "letterbox-topleft" else ((out_w - nw) // 2, (out_h - nh) // 2)
        resized = (nw, nh)
        place = (left, top, min(nw, out_w - left), min(nh, out_h - top))  # PIL's paste clips to the canvas
        # The reference divides boxes by r, not by nw / w.
        sx, sy, ox, oy = r, r, float(left), float(top)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    if min(resized) < 1:
        raise ValueError(f"a {w}x{h} frame resizes to {resized[0]}x{resized[1]} for {mode!r}: nothing to place")
    context = {"orig_hw": [h, w], "input_hw": [out_h, out_w], "scale_xy": [sx, sy], "offset_xy": [ox, oy]}
    return Geometry(src, resized, window, place, (out_w, out_h), context)


def resize_image(img: Image.Image, pipeline: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
    """Apply the pipeline's resize mode; return the network-sized image and the coordinate context."""
    g = geometry(img.size[0], img.size[1], pipeline)
    left, top, src_w, src_h = g.src
    if (src_w, src_h) != img.size:
        img = img.crop((left, top, left + src_w, top + src_h))
    resized = img.resize(g.resized, Image.BILINEAR)
    out_w, out_h = g.out
    if pipeline["resize"].startswith("letterbox"):
        pad = int(round(pipeline["pad_value"]))
        net = Image.new("RGB", (out_w, out_h), (pad, pad, pad))
        net.paste(resized, g.place[:2])
    elif g.resized != g.out:
        wl, wt = g.window
        net = resized.crop((wl, wt, wl + out_w, wt + out_h))
    else:
        net = resized
    return net, g.context


def to_tensor(img: Image.Image, pipeline: dict[str, Any]) -> np.ndarray:
    """Colour order, scale, mean/std, dtype and layout: an RGB PIL image -> a batch-1 tensor."""
    x = np.asarray(img, dtype=np.uint8)
    if pipeline["channel_order"] == "BGR":
        x = x[:, :, ::-1]
    if pipeline["dtype"] == "uint8":
        t = np.ascontiguousarray(x)  # quantised models take the raw pixels
    else:
        mean = np.asarray(pipeline["mean"], np.float32)
        std = np.asarray(pipeline["std"], np.float32)
        t = (x.astype(np.float32) * np.float32(pipeline["scale"]) - mean) / std
    if pipeline["layout"] == "NCHW":
        t = t.transpose(2, 0, 1)
    return np.ascontiguousarray(t[np.newaxis])


def prepare_input(image: ImageLike, pipeline: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The network input tensor for ``image`` and the context that ``postprocess.finish`` needs."""
    if not pipeline.get("size"):
        raise ValueError("pipeline has no 'size'; bind it to the model first (config.bind_to_model)")
    net, context = resize_image(load_image(image), pipeline)
    return to_tensor(net, pipeline), context
