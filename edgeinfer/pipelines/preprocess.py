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

from edgeinfer.errors import ImageError, PipelineError

ImageLike = np.ndarray | str | Path | Image.Image


def load_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from an HxWx3 uint8 RGB array, a path or a PIL image.

    Raises :class:`ImageError` (a ``ValueError``) saying what was expected for a missing or undecodable
    file, an empty image or an array of another kind. 16-bit grayscale images (PNG mode ``I;16``) are
    scaled to 8 bits: PIL's own conversion clips them to white.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(
                f"cannot read image {str(path)!r}: " + ("it is a directory" if path.is_dir() else "no such file")
            )
        try:
            with Image.open(path) as im:
                im.load()
                return _rgb(im, str(path))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"cannot read image {str(path)!r}: not an image PIL can decode ({e})") from e
    if isinstance(image, Image.Image):
        return _rgb(image, "the image")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(check_image_array(image)), "RGB")
    raise ImageError(f"image must be an HxWx3 uint8 array, a path or a PIL image, got {type(image).__name__}")


def check_image_array(image: np.ndarray) -> np.ndarray:
    """``image`` if it is a non-empty HxWx3 uint8 RGB array, else an :class:`ImageError` saying so."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"image array must be HxWx3 uint8 RGB, got shape {list(image.shape)} dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image array is empty (shape {list(image.shape)}); expected at least 1x1 pixels")
    return image


def _rgb(im: Image.Image, what: str) -> Image.Image:
    if im.width == 0 or im.height == 0:
        raise ImageError(f"{what} is empty ({im.width}x{im.height}); expected at least 1x1 pixels")
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageError(f"{what} is a 32-bit integer image; expected 8- or 16-bit pixels")
        gray = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # 16 -> 8 bits, rounded
        return Image.fromarray(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), "RGB")
    if im.mode == "F":
        raise ImageError(f"{what} is a floating-point image (mode F); expected 8- or 16-bit pixels")
    return im.convert("RGB")


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
    (``resize_image``) and the device kernels (``resample_plan.py``, for OpenCL and CUDA) both follow."""
    if w < 1 or h < 1:
        raise ImageError(f"a {w}x{h} frame is empty; expected at least 1x1 pixels")
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
        raise PipelineError(f"unknown resize mode {mode!r}")
    if min(resized) < 1:
        raise ImageError(f"a {w}x{h} frame resizes to {resized[0]}x{resized[1]} for {mode!r}: nothing to place")
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
        raise PipelineError("pipeline has no 'size'; bind it to the model first (config.bind_to_model)")
    net, context = resize_image(load_image(image), pipeline)
    return to_tensor(net, pipeline), context
