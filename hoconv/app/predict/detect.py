"""Offline face detection with the Haar cascades shipped inside OpenCV, and IoU tracking.

The cascade files come with ``opencv-python-headless`` (``cv2.data.haarcascades``): nothing
is downloaded. Large frames are downscaled to at most ``max_side`` pixels before detection
(speed) and the boxes mapped back. :class:`IoUTracker` links boxes of consecutive frames
into face tracks (greedy matching by intersection over union) for ``--all-faces``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # (x, y, w, h) in pixels

CASCADES = {
    "alt2": "haarcascade_frontalface_alt2.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "default": "haarcascade_frontalface_default.xml",
}


class FaceDetector:
    """Frontal face detector (OpenCV Haar cascade).

    Args:
        cascade: one of :data:`CASCADES` (``"alt2"`` found the most synthetic and real
            frontal faces with the fewest false positives in our checks).
        scale_factor: image pyramid step (``> 1``).
        min_neighbors: detections needed to keep a box (higher = fewer false positives).
        min_size: smallest face side as a fraction of the (downscaled) frame's short side.
        max_side: frames larger than this are downscaled for detection.
    """

    def __init__(
        self,
        cascade: str = "alt2",
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        min_size: float = 0.1,
        max_side: int = 640,
    ) -> None:
        if cascade not in CASCADES:
            raise ValueError(f"cascade: unknown {cascade!r}; expected one of {sorted(CASCADES)}")
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        if min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {min_neighbors}")
        if not 0 < min_size < 1:
            raise ValueError(f"min_size must be a fraction in (0, 1), got {min_size}")
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32 pixels, got {max_side}")
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = Path(folder or ".") / CASCADES[cascade]
        self.classifier = cv2.CascadeClassifier(str(path)) if folder else None
        if self.classifier is None or self.classifier.empty():
            raise FileNotFoundError(
                f"OpenCV Haar cascade {path} is missing (this cv2 ships no cascades);"
                " use the default detector (mtcnn)"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side

    def __call__(self, image: np.ndarray) -> list[Box]:
        """Faces in an ``(H, W, 3)`` RGB uint8 image, largest first."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        h, w = gray.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(
                gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        side = max(12, int(self.min_size * min(gray.shape[:2])))
        found = self.classifier.detectMultiScale(
            gray, self.scale_factor, self.min_neighbors, minSize=(side, side)
        )
        boxes = [tuple(float(v) / scale for v in b) for b in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: -b[2] * b[3])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class IoUTracker:
    """Greedy IoU tracker: each box joins the best-overlapping live track or starts one.

    Args:
        threshold: smallest IoU that links a box to a track.
        max_missed: frames a track may go unseen before it ends.
    """

    def __init__(self, threshold: float = 0.3, max_missed: int = 5) -> None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.max_missed = max_missed
        self.tracks: dict[int, tuple[Box, int]] = {}  # id -> (last box, frames missed)
        self.next_id = 0

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Track ids for ``boxes`` of the next frame (same order)."""
        pairs = sorted(
            (
                (iou(box, last), i, tid)
                for i, box in enumerate(boxes)
                for tid, (last, _) in self.tracks.items()
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for score, i, tid in pairs:
            if score < self.threshold or score == 0:
                break
            if ids[i] is None and tid not in used:
                ids[i] = tid
                used.add(tid)
        for i in range(len(boxes)):
            if ids[i] is None:
                ids[i] = self.next_id
                self.next_id += 1
        for tid, (last, missed) in list(self.tracks.items()):
            if tid not in ids:
                if missed + 1 > self.max_missed:
                    del self.tracks[tid]
                else:
                    self.tracks[tid] = (last, missed + 1)
        for i, tid in enumerate(ids):
            self.tracks[tid] = (tuple(boxes[i]), 0)
        return [int(t) for t in ids]
