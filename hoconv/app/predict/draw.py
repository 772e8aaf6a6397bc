"""Drawing on frames: face boxes, 5 landmarks and labels, and captioned contact sheets.

Text sizes follow the image (``font_scale``) so that labels stay legible from 288 px
photos to 1080p video; labels sit on a dark band, above the face box or below it when
there is no room.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
BOX = (40, 220, 40)
# left eye, right eye, nose, mouth left, mouth right
POINT_COLOURS = ((0, 200, 255), (0, 200, 255), (255, 220, 0), (255, 60, 200), (255, 60, 200))


def font_scale(image: np.ndarray) -> float:
    """OpenCV font scale for an image: 0.45 at 288 px, 1.0 at 640 px, 1.7 at 1080 px."""
    return max(0.45, min(image.shape[:2]) / 640)


def face_label(row: dict) -> list[str]:
    """The label lines of a scored row: ``V +0.52  A -0.31`` and ``Happy 83%``."""
    lines = [f"V {row['valence']:+.2f}  A {row['arousal']:+.2f}"]
    if row.get("expression"):
        lines.append(f"{row['expression']} {100 * float(row['expression_prob']):.0f}%")
    return lines


def _band(lines: list[str], scale: float) -> tuple[int, int, int, int]:
    """Width, height, line height and padding (pixels) of a text band."""
    thick = max(1, round(2 * scale))
    sizes = [cv2.getTextSize(t, FONT, scale, thick)[0] for t in lines]
    pad = max(3, round(5 * scale))
    line_h = max(h for _, h in sizes) + pad
    return max(w for w, _ in sizes) + 2 * pad, line_h * len(lines) + pad, line_h, pad


def draw_text_band(image: np.ndarray, lines: list[str], x: int, y: int, scale: float) -> None:
    """Draw ``lines`` in white on a darkened band whose top-left corner is near ``x, y``."""
    width, height, line_h, pad = _band(lines, scale)
    x = int(min(max(0, x), max(0, image.shape[1] - width)))
    top = int(min(max(0, y), max(0, image.shape[0] - height)))
    band = image[top : top + height, x : x + width]
    band[:] = (band * 0.25).astype(np.uint8)  # darken, keep a hint of the picture
    thick = max(1, round(2 * scale))
    for i, text in enumerate(lines):
        org = (x + pad, top + line_h * (i + 1) - pad // 2)
        cv2.putText(image, text, org, FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(size: tuple[int, int], box: tuple, band: tuple[int, int], taken: list) -> tuple:
    """Top-left corner of a label band: above the face box, else below, clear of ``taken``.

    Args:
        size: image ``(height, width)``.
        box: face ``(x0, y0, x1, y1)``.
        band: label ``(width, height)``.
        taken: ``(x0, y0, x1, y1)`` of the labels already placed (the new one is added).
    """
    (h, w), (bw, bh) = size, band
    x = int(min(max(0, box[0]), max(0, w - bw)))
    above, below = [], []
    for k in range(0, 2 * len(taken) + 2):
        above.append(box[1] - bh * (k + 1))
        below.append(box[3] + bh * k)
    for y in [v for v in above if v >= 0] + [v for v in below if v + bh <= h] or [0]:
        rect = (x, int(y), x + bw, int(y) + bh)
        if not any(_overlaps(rect, t) for t in taken):
            break
    taken.append(rect)
    return rect[:2]


def annotate(image: np.ndarray, rows: list[dict]) -> np.ndarray:
    """A copy of an RGB frame with each face's box, landmarks and values drawn on it."""
    out = image.copy()
    scale = font_scale(out)
    thick = max(2, round(2 * scale))
    many = len({r["face"] for r in rows if r.get("face") != ""}) > 1
    taken: list[tuple] = []
    for r in rows:
        if r["valence"] == "":
            draw_text_band(out, [r["reason"] or "no value"], 0, 0, scale)
            continue
        x, y, w, h = (int(r[k]) for k in ("box_x", "box_y", "box_w", "box_h"))
        cv2.rectangle(out, (x, y), (x + w, y + h), BOX, thick, cv2.LINE_AA)
        for (px, py), colour in zip(r.get("landmarks") or [], POINT_COLOURS):
            radius = max(2, round(0.025 * max(w, h)))
            cv2.circle(out, (round(px), round(py)), radius, colour, -1, cv2.LINE_AA)
        taken.append((x, y, x + w, y + h))
    for r in rows:
        if r["valence"] != "":
            lines = face_label(r)
            if many:
                lines[0] = f"#{r['face']}  " + lines[0]
            bw, bh = _band(lines, scale)[:2]
            x, y, w, h = (int(r[k]) for k in ("box_x", "box_y", "box_w", "box_h"))
            corner = place_label(
                out.shape[:2], (x, y - thick, x + w, y + h + thick), (bw, bh), taken
            )
            draw_text_band(out, lines, *corner, scale)
    return out


def enlarge(image: np.ndarray, rows: list[dict], short_side: int = 360) -> tuple:
    """A small image and its rows' boxes / landmarks scaled up to ``short_side`` pixels."""
    s = short_side / min(image.shape[:2])
    if s <= 1:
        return image, rows
    big = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)),
                     interpolation=cv2.INTER_CUBIC)  # fmt: skip
    scaled = []
    for r in rows:
        r = dict(r)
        for k in ("box_x", "box_y", "box_w", "box_h"):
            r[k] = r[k] if r[k] == "" else round(r[k] * s)
        if r.get("landmarks"):
            r["landmarks"] = (np.asarray(r["landmarks"]) * s).tolist()
        scaled.append(r)
    return big, scaled


def caption(rows: list[dict]) -> str:
    """One-line summary of an image's faces for a contact sheet."""
    scored = [r for r in rows if r["valence"] != ""]
    if not scored:
        return rows[0]["reason"] if rows and rows[0]["reason"] else "no value"
    first = scored[0]
    text = f"V {first['valence']:+.2f} A {first['arousal']:+.2f}"
    if first.get("expression"):
        text += f" {first['expression']}"
    return text + (f" (+{len(scored) - 1} faces)" if len(scored) > 1 else "")


def _fit(text: str, width: int, scale: float) -> str:
    """``text`` cut (with "...") to at most ``width`` pixels at ``scale``."""
    while len(text) > 4 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width:
        text = text[: max(4, len(text) - 4)] + "..."
        text = text.replace("......", "...")
    return text


def contact_sheet(tiles: list[tuple[np.ndarray, list[str]]], path: Path, thumb: int = 360,
                  cols: int = 4) -> None:  # fmt: skip
    """Write RGB images as a grid of ``thumb``-pixel tiles, each with caption lines below."""
    cols = max(1, min(cols, len(tiles)))
    scale = thumb / 640
    n_lines = max(len(lines) for _, lines in tiles)
    line_h = round(30 * scale) + 6
    cell_h = thumb + line_h * n_lines + 6
    sheet = np.full((math.ceil(len(tiles) / cols) * cell_h, cols * thumb, 3), 24, np.uint8)
    for i, (tile, lines) in enumerate(tiles):
        h, w = tile.shape[:2]
        s = thumb / max(h, w)
        small = cv2.resize(tile, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA)  # fmt: skip
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h, c * thumb
        oy, ox = (thumb - small.shape[0]) // 2, (thumb - small.shape[1]) // 2
        sheet[y0 + oy : y0 + oy + small.shape[0], x0 + ox : x0 + ox + small.shape[1]] = small
        for k, text in enumerate(lines):
            org = (x0 + 6, y0 + thumb + line_h * (k + 1))
            colour = (255, 255, 255) if k == 0 else (200, 230, 200)
            cv2.putText(sheet, _fit(text, thumb - 12, 0.9 * scale), org, FONT, 0.9 * scale,
                        colour, 1, cv2.LINE_AA)  # fmt: skip
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
