"""Procedural cartoon faces whose expression is a smooth function of valence and arousal.

Expression (all smooth in ``(v, a)``):

* mouth curvature from valence (corners up = positive), a contempt-like asymmetry near
  ``(v, a) = (-1, 0)``;
* mouth opening, eye opening and brow raise from arousal; brow tilt from ``-v * a``
  (inner ends down for anger, up for sadness).

Nuisance: identity (face shape, skin / hair / eye colour, eye spacing and size, brow
height, mouth size and position - eye size and brow height vary as much as arousal
moves them, so arousal is harder to read from one frame than valence, as on real data),
pose (roll, yaw, position, scale), lighting direction and strength, background colour and
clutter, pixel noise. All drawing is OpenCV on an RGB uint8 canvas.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


def sample_identity(rng: np.random.Generator) -> dict:
    """Random identity parameters (lengths in units of the face half-height)."""
    tone = rng.uniform(0.0, 1.0)
    skin = np.array([235, 200, 170]) * (1 - tone) + np.array([110, 70, 45]) * tone
    return {
        "skin": np.clip(skin + rng.normal(0, 10, 3), 0, 255),
        "hair": rng.uniform(10, 120, 3) * rng.uniform(0.3, 1.0),
        "iris": rng.uniform(20, 140, 3),
        "aspect": rng.uniform(0.72, 0.9),  # face half-width / half-height
        "eye_dx": rng.uniform(0.30, 0.42),
        "eye_y": rng.uniform(-0.22, -0.10),
        "eye_size": rng.uniform(0.10, 0.16),
        "brow_gap": rng.uniform(0.12, 0.22),
        "mouth_w": rng.uniform(0.30, 0.40),
        "mouth_y": rng.uniform(0.40, 0.52),
        "hair_h": rng.uniform(0.15, 0.45),
    }


def sample_view(rng: np.random.Generator) -> dict:
    """Random pose / lighting / background for one still image (or a video's base view)."""
    return {
        "dx": rng.uniform(-0.08, 0.08),
        "dy": rng.uniform(-0.08, 0.08),
        "scale": rng.uniform(0.30, 0.40),  # face half-height / image size
        "roll": rng.uniform(-0.30, 0.30),
        "yaw": rng.uniform(-0.35, 0.35),
        "light_dir": rng.uniform(0, 2 * math.pi),
        "light": rng.uniform(0.0, 0.45),
        "gain": rng.uniform(0.75, 1.15),
        "bg": rng.uniform(0, 255, 3),
        "bg2": rng.uniform(0, 255, 3),
        "clutter": rng.integers(0, 4),
        "clutter_seed": int(rng.integers(0, 2**31)),
        "noise": rng.uniform(2.0, 10.0),
    }


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _background(size: int, view: dict) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, size)[None, :, None]  # (1, W, 1)
    img = view["bg"] * (1 - ramp) + view["bg2"] * ramp  # (1, W, 3)
    img = np.broadcast_to(img, (size, size, 3)).astype(np.uint8).copy()
    crng = np.random.default_rng(view["clutter_seed"])
    for _ in range(int(view["clutter"])):
        color = tuple(float(c) for c in crng.uniform(0, 255, 3))
        x0, y0 = crng.uniform(0, size, 2)
        w, h = crng.uniform(0.1, 0.4, 2) * size
        cv2.rectangle(img, _pt(x0, y0), _pt(x0 + w, y0 + h), color, -1, cv2.LINE_AA, _SHIFT)
    return img


class _Pen:
    """Draws in face coordinates (half-height 1, rolled and yaw-shifted) onto ``img``."""

    def __init__(self, img: np.ndarray, view: dict) -> None:
        size = img.shape[0]
        self.img = img
        self.unit = view["scale"] * size  # pixels per face half-height
        self.cx = size * (0.5 + view["dx"])
        self.cy = size * (0.5 + view["dy"])
        self.roll = view["roll"]
        self.cr, self.sr = math.cos(view["roll"]), math.sin(view["roll"])
        self.yaw = view["yaw"]

    def tp(self, x: float, y: float) -> tuple[int, int]:
        """Face coordinates -> fixed-point image point (with roll and a yaw shift)."""
        x = x * (1 - 0.25 * abs(self.yaw)) + 0.35 * self.yaw * (1 - x * x)
        cr, sr, unit = self.cr, self.sr, self.unit
        return _pt(self.cx + unit * (cr * x - sr * y), self.cy + unit * (sr * x + cr * y))

    def ellipse(self, x, y, ax, ay, color, thick=-1) -> None:
        """An ellipse centred at ``(x, y)`` with half-axes ``(ax, ay)`` (filled by default)."""
        ax_px = max(self.unit * ax, 0.3)
        ay_px = max(self.unit * ay, 0.3)
        cv2.ellipse(
            self.img,
            self.tp(x, y),
            _pt(ax_px, ay_px),
            math.degrees(self.roll),
            0,
            360,
            tuple(float(c) for c in color),
            thick,
            cv2.LINE_AA,
            _SHIFT,
        )

    def poly(self, points, color, thick=-1) -> None:
        """A filled polygon (``thick < 0``) or a polyline ``thick`` face units wide."""
        pts = np.array([self.tp(x, y) for x, y in points], dtype=np.int32)[None]  # (1, K, 2)
        color = tuple(float(c) for c in color)
        if thick < 0:
            cv2.fillPoly(self.img, pts, color, cv2.LINE_AA, _SHIFT)
        else:
            width = max(1, int(round(thick * self.unit)))
            cv2.polylines(self.img, pts, False, color, width, cv2.LINE_AA, _SHIFT)


def render_face(
    size: int,
    identity: dict,
    view: dict,
    valence: float,
    arousal: float,
    blink: float = 0.0,
    noise_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Draw one face; returns ``(size, size, 3)`` uint8 RGB."""
    v, a = float(valence), float(arousal)
    img = _background(size, view)
    pen = _Pen(img, view)
    asp = identity["aspect"]
    skin = identity["skin"]
    pen.ellipse(0.0, -0.25, asp * 1.05, 0.85 + identity["hair_h"] * 0.3, identity["hair"])
    pen.ellipse(0.0, 0.0, asp, 1.0, skin)
    _eyes_and_brows(pen, identity, v, a, blink)
    pen.poly([(0.0, -0.05), (-0.06, 0.22), (0.05, 0.24)], skin * 0.7, thick=0.03)
    _mouth(pen, identity, v, a)
    return _finish(img, view, noise_rng)


def _eyes_and_brows(pen: _Pen, identity: dict, v: float, a: float, blink: float) -> None:
    """Eyes: opening from arousal, closed by blinks; brows: raised by arousal, tilted by -v * a."""
    skin = identity["skin"]
    openness = float(np.clip(0.55 + 0.38 * a, 0.1, 1.0)) * (1.0 - float(np.clip(blink, 0, 1)))
    es = identity["eye_size"]
    for side in (-1.0, 1.0):
        ex, ey = side * identity["eye_dx"], identity["eye_y"]
        if openness > 0.08:
            pen.ellipse(ex, ey, es * 1.3, es * openness, (245, 245, 240))
            pen.ellipse(ex, ey, es * 0.55, min(es * 0.55, es * openness), identity["iris"])
        pen.poly([(ex - es * 1.3, ey), (ex + es * 1.3, ey)], skin * 0.45, thick=0.025)
        by = ey - identity["brow_gap"] - 0.10 * a
        tilt = 0.10 * (-v) * a
        inner, outer = ex - side * es * 0.3, ex + side * es * 1.6
        pen.poly([(outer, by - 0.02), (inner, by + tilt)], identity["hair"] * 0.6, thick=0.06)


def _mouth(pen: _Pen, identity: dict, v: float, a: float) -> None:
    """Mouth: curvature from valence, opening from arousal, asymmetry near (-1, 0)."""
    mw, my = identity["mouth_w"], identity["mouth_y"]
    curve = 0.28 * v
    angle = math.atan2(a, v)
    asym = 0.10 * math.hypot(v, a) * math.exp(-(((abs(angle) - math.pi) / 0.5) ** 2))
    opening = 0.16 * float(np.clip((a + 0.1) / 1.1, 0.0, 1.0)) ** 1.5
    xs = np.linspace(-1.0, 1.0, 9)
    upper = [(mw * x, my - curve * x * x - asym * max(x, 0.0)) for x in xs]
    lower = [(mw * x, y + opening * (1 - x * x)) for (_, y), x in zip(upper, xs)]
    if opening > 0.01:
        pen.poly(upper + lower[::-1], (90, 20, 30))
    lip = (150, 50, 60)
    pen.poly(upper, lip, thick=0.07)
    if opening > 0.01:
        pen.poly(lower, lip, thick=0.07)


def _finish(img: np.ndarray, view: dict, noise_rng: np.random.Generator | None) -> np.ndarray:
    """Directional lighting, global gain, pixel noise."""
    size = img.shape[0]
    grid = np.linspace(-1.0, 1.0, size)
    shade = (
        math.cos(view["light_dir"]) * grid[None, :] + math.sin(view["light_dir"]) * grid[:, None]
    )
    out = img.astype(np.float32) * (view["gain"] * (1.0 + view["light"] * shade))[..., None]
    if noise_rng is not None and view["noise"] > 0:
        out += noise_rng.normal(0.0, view["noise"], out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
