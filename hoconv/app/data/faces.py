"""Face crops: square crop around a box or landmarks with a margin, then resize.

Parts of the crop outside the image are filled with zeros (black), so the face stays
centred and undistorted near image borders.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def box_from_landmarks(landmarks: np.ndarray | Sequence) -> tuple[float, float, float, float]:
    """Tight ``(x, y, w, h)`` box of ``(K, 2)`` landmarks (or ``2K`` flat ``x0, y0, x1, ...``)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim == 1:
        if pts.size % 2:
            raise ValueError(f"flat landmarks need an even number of values, got {pts.size}")
        pts = pts.reshape(-1, 2)  # (K, 2)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise ValueError(f"landmarks must be (K, 2) with K >= 1, got shape {pts.shape}")
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def square_box(box: Sequence[float], margin: float = 0.2) -> tuple[float, float, float]:
    """Centre ``(cx, cy)`` and side of the square enclosing ``box`` enlarged by ``margin``.

    Args:
        box: ``(x, y, w, h)``.
        margin: relative enlargement: the square's side is ``max(w, h) * (1 + margin)``.
    """
    if len(box) != 4:
        raise ValueError(f"box must be (x, y, w, h), got {box!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x, y, w, h = (float(v) for v in box)
    side = max(w, h, 1.0) * (1.0 + margin)
    return x + w / 2.0, y + h / 2.0, side


def crop_face(
    image: np.ndarray,
    box: Sequence[float] | None = None,
    landmarks: np.ndarray | Sequence | None = None,
    margin: float = 0.2,
    size: int = 112,
) -> np.ndarray:
    """Square face crop resized to ``size`` x ``size``.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` uint8 image.
        box: face box ``(x, y, w, h)`` in pixels; used when given.
        landmarks: ``(K, 2)`` points; their bounding box is used when ``box`` is None.
        margin: relative enlargement of the square side (see :func:`square_box`).
        size: output side in pixels.

    Returns:
        ``(size, size, C)`` array of the same dtype (the whole image resized when neither
        box nor landmarks is given).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if box is None and landmarks is None:
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if box is None:
        box = box_from_landmarks(landmarks)
    cx, cy, side = square_box(box, margin)
    scale = size / side
    # Affine map: crop square -> (size, size); pixels outside the image become 0.
    matrix = np.array(
        [[scale, 0.0, size / 2.0 - scale * cx], [0.0, scale, size / 2.0 - scale * cy]],
        dtype=np.float64,
    )
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        image, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
