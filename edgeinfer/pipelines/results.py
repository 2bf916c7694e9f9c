"""Detection results: small dataclasses for reading, arrays for vectorised use, and a drawing helper."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Graph outputs that decode_graph.append_postprocessing adds to a detector (network-input pixels).
DET_BOXES = "det_boxes"  # [M, 4] float32 x1, y1, x2, y2
DET_SCORES = "det_scores"  # [M] float32, highest first
DET_CLASSES = "det_classes"  # [M] int64 index into the labels


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is (x1, y1, x2, y2) in original-image pixels (not clipped)."""

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]


class Detections(Sequence[Detection]):
    """The detections of one image, highest score first.

    Index or iterate it for :class:`Detection` objects; ``.boxes`` (N, 4), ``.scores`` (N,) and
    ``.class_ids`` (N,) hold the same data as arrays.
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, labels: Sequence[str] = ()):
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.class_ids):
            raise ValueError(
                f"boxes, scores and class_ids differ in length: {len(self.boxes)}, {len(self.scores)}, "
                f"{len(self.class_ids)}"
            )
        self._labels = list(labels)

    def label_of(self, class_id: int) -> str:
        return self._labels[class_id] if 0 <= class_id < len(self._labels) else str(class_id)

    @property
    def labels(self) -> list[str]:
        return [self.label_of(int(c)) for c in self.class_ids]

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Detections(self.boxes[i], self.scores[i], self.class_ids[i], self._labels)
        c = int(self.class_ids[i])
        box = tuple(float(v) for v in self.boxes[i])
        return Detection(self.label_of(c), c, float(self.scores[i]), box)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Detection]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        items = ", ".join(f"{d.label} {d.score:.3f} [{', '.join(f'{v:.0f}' for v in d.box)}]" for d in self)
        return f"Detections({len(self)}: {items})"


def _colour(class_id: int) -> tuple[int, int, int]:
    # A fixed, well-spread colour per class (golden-ratio hue steps).
    h = (class_id * 0.618033988749895) % 1.0
    i, f = int(h * 6), (h * 6) % 1.0
    v, p, q, t = 255, 60, int(255 * (1 - 0.75 * f)), int(60 + 195 * f)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]


def draw_detections(
    image: np.ndarray | str | Path | Image.Image, detections: Sequence[Detection], path: str | Path | None = None
) -> Image.Image:
    """Draw boxes and ``label score`` tags on a copy of ``image``; save it to ``path`` when given."""
    from edgeinfer.pipelines.preprocess import load_image

    canvas = load_image(image).copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    for det in detections:
        colour = _colour(det.class_id)
        x1, y1, x2, y2 = det.box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{det.label} {det.score:.2f}"
        tx, ty = max(0.0, x1), max(0.0, y1)
        left, top, right, bottom = draw.textbbox((tx, ty), text)
        ty = ty - (bottom - top) - 2 if ty - (bottom - top) - 2 >= 0 else ty
        left, top, right, bottom = draw.textbbox((tx, ty), text)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0))
    if path is not None:
        canvas.save(path)
    return canvas
