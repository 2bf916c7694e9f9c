"""A Raspberry-Pi-style live loop: frames in, detections (or labels) drawn, per-stage times printed.

    python examples/camera.py                       # camera 0 through OpenCV, window with overlay
    python examples/camera.py --source clip.mp4     # a video file (needs OpenCV)
    python examples/camera.py --source photos/ --headless --max-frames 10

Frames come from OpenCV's ``VideoCapture`` when OpenCV is installed and a camera opens; otherwise from a
video file (OpenCV) or a folder of images (PIL). With no camera and no ``--source`` it says so and
uses the demo images in ``examples/data``. Each frame prints pre-processing, inference and
post-processing milliseconds and the frame rate, and the same numbers are drawn on the frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _demo import DATA, DETECTOR, demo_pack  # noqa: E402

import edgeinfer  # noqa: E402
from edgeinfer.pipelines import Detections, draw_detections  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

try:
    import cv2
except ImportError:  # OpenCV is optional: folders of images work without it
    cv2 = None


def camera_frames(index: int) -> Iterator[np.ndarray] | None:
    """RGB frames from camera ``index``, or None when OpenCV is missing or the camera does not open."""
    if cv2 is None:
        return None
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        return None
    return _capture(cap)


def video_frames(path: Path) -> Iterator[np.ndarray]:
    if cv2 is None:
        raise SystemExit(f"reading the video {path} needs OpenCV (pip install opencv-python-headless); "
                         "or pass a folder of images")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"OpenCV cannot open the video {path}")
    return _capture(cap)


def _capture(cap) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield np.ascontiguousarray(frame[:, :, ::-1])  # OpenCV gives BGR
    finally:
        cap.release()


def folder_frames(folder: Path) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    for path in files:
        with Image.open(path) as im:
            yield np.asarray(im.convert("RGB"))


def open_source(source: str | None) -> tuple[Iterator[np.ndarray], str]:
    """The frame iterator for ``--source`` and a description of it."""
    if source is None or source.isdigit():
        index = int(source or 0)
        frames = camera_frames(index)
        if frames is not None:
            return frames, f"camera {index}"
        why = "OpenCV (cv2) is not installed" if cv2 is None else f"no camera opens at index {index}"
        if source is not None:
            raise SystemExit(f"no camera: {why}. Pass --source VIDEO_FILE or --source IMAGE_FOLDER instead.")
        print(f"no camera: {why}; using the demo images in {DATA} (pass --source to choose)")
        return folder_frames(DATA), f"folder {DATA}"
    path = Path(source)
    if path.is_dir():
        return folder_frames(path), f"folder {path}"
    if path.is_file():
        return video_frames(path), f"video {path}"
    raise SystemExit(f"--source {source!r} is neither a camera index, a folder of images nor a video file")


def overlay(frame: np.ndarray, result, lines: list[str]) -> Image.Image:
    """The frame with the detections (or the top label) and the timing lines drawn on it."""
    if isinstance(result, Detections):
        canvas = draw_detections(frame, result)
    else:
        canvas = Image.fromarray(frame)
        lines = [f"{result[0][0]} {result[0][1]:.2f}", *lines] if result else lines
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(lines):
        x, y = 6, 6 + 14 * i
        box = draw.textbbox((x, y), text)
        draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=(0, 0, 0))
        draw.text((x, y), text, fill=(255, 255, 0))
    return canvas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help="camera index, video file or image folder (default: camera 0)")
    ap.add_argument("--pack", help="a detection or classification .pack (default: the FastestDet demo)")
    ap.add_argument("--device", default="auto", help="auto, cpu, opencl, opencl:P:D, ... (default auto)")
    ap.add_argument("--headless", action="store_true", help="no window: print the per-frame numbers only")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N frames (default: until the end)")
    ap.add_argument("--save-dir", help="write each annotated frame here as frame_00001.jpg, ...")
    args = ap.parse_args(argv)

    frames, what = open_source(args.source)  # before compiling: a missing camera should fail fast
    sess = edgeinfer.Session(args.pack or demo_pack(*DETECTOR), device=args.device)
    if not sess.pipeline:
        ap.error(f"{sess.path} has no image pipeline; compile it with --preset or --pipeline")
    show = not args.headless
    if show and cv2 is None:
        print("showing frames needs OpenCV (pip install opencv-python); running headless")
        show = False
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    print(f"{what} -> {sess.path.name} on {sess.backend}")

    input_name = sess.pipeline["input"]
    fps, last = 0.0, time.perf_counter()
    count = 0
    for frame in frames:
        t0 = time.perf_counter()
        tensor, context = sess.preprocess(frame)  # device kernels on OpenCL, PIL + NumPy on the CPU
        t1 = time.perf_counter()
        outputs = sess.run({input_name: tensor})
        t2 = time.perf_counter()
        result = sess.postprocess(outputs, context)
        t3 = time.perf_counter()
        count += 1
        # Frame rate over the whole loop (capture and drawing included), smoothed.
        rate = 1.0 / max(t3 - last, 1e-9)
        fps = rate if count == 1 else 0.9 * fps + 0.1 * rate
        last = t3
        found = f"{len(result)} detections" if isinstance(result, Detections) else (result[0][0] if result else "")
        pre, infer, post = 1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2)
        line = f"pre {pre:.1f} ms  infer {infer:.1f} ms  post {post:.1f} ms  {fps:.1f} FPS"
        print(f"frame {count}: {line}  {found}", flush=True)
        if show or save_dir:
            canvas = overlay(frame, result, [line])
            if save_dir:
                canvas.save(save_dir / f"frame_{count:05d}.jpg")
            if show:
                cv2.imshow("edgeinfer", np.asarray(canvas)[:, :, ::-1])
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
        if args.max_frames and count >= args.max_frames:
            break
    if show:
        cv2.destroyAllWindows()
    print(f"{count} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
