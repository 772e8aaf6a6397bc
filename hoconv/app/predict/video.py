"""Input sources for prediction: image files, folders, video files and webcams (OpenCV).

:func:`expand_inputs` turns command-line inputs into :class:`Source` objects and a list of
problems (missing paths, unsupported formats) instead of stopping at the first bad one, so
the good inputs still get scored. :func:`open_source` checks that a source can really be
read (an unreadable or zero-length video is refused with a one-line reason), and
:func:`iter_frames` yields its frames as RGB ``uint8`` arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class SourceError(ValueError):
    """A source that cannot be read (unreadable, zero-length, unsupported)."""


@dataclass
class Source:
    """One input: an image, a video file or a webcam.

    Attributes:
        path: file path, or ``"webcam:N"``.
        kind: ``"image"``, ``"video"`` or ``"webcam"``.
        fps: frames per second (``None`` for images; webcams report theirs or 30).
        frame_count: frames announced by the container (``None`` when unknown).
        width, height: frame size in pixels (filled by :func:`open_source`).
        max_frames: stop after this many frames (webcams; ``None`` = all).
    """

    path: str
    kind: str
    fps: float | None = None
    frame_count: int | None = None
    width: int = 0
    height: int = 0
    max_frames: int | None = None


def classify_path(path: str | os.PathLike) -> str | None:
    """``"image"`` / ``"video"`` from the file extension, ``None`` if unsupported."""
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def expand_inputs(
    inputs: list[str], webcam_frames: int | None = 300
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Expand files, folders (their images and videos, sorted, not recursive) and webcams.

    A bare integer that is not an existing path (``"0"``) means a webcam index.

    Returns:
        ``(sources, problems)``; each problem is ``(path, reason)`` for an input that was
        skipped (missing, unsupported format, empty folder).
    """
    if not inputs:
        raise ValueError("inputs: expected at least one image, folder, video or webcam index")
    sources: list[Source] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if item.isdigit() and not path.exists():
            sources.append(Source(f"webcam:{item}", "webcam", max_frames=webcam_frames))
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and classify_path(p))
            if not found:
                problems.append((item, "folder holds no image or video files"))
            sources.extend(Source(str(p), classify_path(p)) for p in found)
        elif not path.exists():
            problems.append((item, f"no such file: {item}"))
        elif classify_path(path) is None:
            known = ", ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            problems.append(
                (item, f"unsupported format {path.suffix or '(none)'!r}; expected {known}")
            )
        else:
            sources.append(Source(str(path), classify_path(path)))
    return sources, problems


def read_image(path: str) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (grey and alpha images converted)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise SourceError(f"{path}: unreadable image (not a valid image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _quiet_capture(index: int) -> cv2.VideoCapture:
    """Open webcam ``index`` with OpenCV's log silenced (no camera: no V4L2 warnings)."""
    set_level = getattr(getattr(cv2, "utils", None), "logging", None)
    if set_level is None:  # pragma: no cover - builds without cv2.utils.logging
        return cv2.VideoCapture(index)
    previous = set_level.getLogLevel()
    set_level.setLogLevel(set_level.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(index)
    finally:
        set_level.setLogLevel(previous)


def _capture(source: Source) -> cv2.VideoCapture:
    if source.kind == "webcam":
        return _quiet_capture(int(source.path.split(":", 1)[1]))
    if os.path.getsize(source.path) == 0:
        raise SourceError(f"{source.path}: zero-length video file")
    return cv2.VideoCapture(source.path)


def open_source(source: Source) -> Source:
    """Check that ``source`` can be read and fill in its fps, frame count and size.

    Raises:
        SourceError: unreadable image, or a video/webcam that does not open or has no
            readable frame.
    """
    if source.kind == "image":
        image = read_image(source.path)
        source.height, source.width = image.shape[:2]
        source.frame_count = 1
        return source
    cap = _capture(source)
    try:
        if not cap.isOpened():
            what = "webcam" if source.kind == "webcam" else "video"
            raise SourceError(f"{source.path}: unreadable {what} (OpenCV cannot open it)")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise SourceError(
                f"{source.path}: video has no readable frame (zero-length or corrupt)"
            )
        source.height, source.width = frame.shape[:2]
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        source.fps = fps if np.isfinite(fps) and fps > 0 else 30.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        source.frame_count = count if count > 0 and source.kind == "video" else source.max_frames
    finally:
        cap.release()
    return source


def iter_frames(source: Source) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """Yield ``(frame_index, time_s, rgb)`` for every readable frame of ``source``.

    Images give one frame with ``time_s = None``. A video stops at its first unreadable
    frame (the count of frames read is what the caller reports).
    """
    if source.kind == "image":
        yield 0, None, read_image(source.path)
        return
    cap = _capture(source)
    try:
        index = 0
        while source.max_frames is None or index < source.max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            yield index, index / (source.fps or 30.0), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
