"""``synthetic``: the embedded procedural facial-affect data set (no files needed).

Faces are drawn by :mod:`hoconv.app.data.synth_render`: expression is a smooth function of
valence / arousal in ``[-1, 1]`` (inside the unit disk), with identity, pose, lighting,
background and noise as nuisance. Labels:

* ``valence``, ``arousal``: the generating values.
* ``expression``: the AffectNet class of the circumplex sector of ``(v, a)``
  (:func:`circumplex_expression`): 0 Neutral (radius < 0.2), then by angle
  ``atan2(a, v)`` in degrees: Happy [-90, 60), Surprise [60, 100), Fear [100, 122),
  Anger [122, 145), Disgust [145, 168), Contempt [168, 195), Sad [195, 270).

Static mode: ``images_per_subject`` stills per subject, V/A uniform in the disk (15 %
near neutral), each with its own view. ``video`` is ``"sNNN/stills"`` and ``frame`` the
still's index. Video mode: ``videos_per_subject`` videos of ``frames_per_video`` frames
whose V/A follow smooth random trajectories (a few random sinusoids); arousal also drives
head motion (jitter amplitude of position / roll grows from 0.15x to 1x with arousal) and
blink rate (2 % to 14 % of frames start a blink), so a temporal model can read arousal
from motion that a single frame does not show. ``video`` is ``"sNNN/vKK"``.

Splits are subject (identity) independent: subjects 0 .. num_subjects - 1 are partitioned
by ``fractions`` with ``seed``. Everything is a deterministic function of ``seed``,
subject and item index. Samples are generated at construction (about 0.5 ms per 64 px
frame) and kept in memory; ``cache_dir`` also stores them as ``.npz`` for reuse.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from hoconv.app.data import register
from hoconv.app.data.base import (
    MODES,
    SPLITS,
    AffectDataset,
    VideoRecord,
    check_choice,
    split_subjects,
)
from hoconv.app.data.report import LoadReport
from hoconv.app.data.synth_render import render_face, sample_identity, sample_view

# (upper bound of the sector in degrees, class), sectors starting at -90 degrees.
_SECTORS = ((60, 1), (100, 3), (122, 4), (145, 6), (168, 5), (195, 7), (270, 2))


def circumplex_expression(valence, arousal, neutral_radius: float = 0.2) -> np.ndarray:
    """AffectNet class (int64, same shape) of circumplex points (see module docstring)."""
    v = np.asarray(valence, dtype=np.float64)
    a = np.asarray(arousal, dtype=np.float64)
    angle = np.degrees(np.arctan2(a, v))
    angle = np.where(angle < -90, angle + 360, angle)  # in [-90, 270)
    out = np.full(np.broadcast(v, a).shape, 2, dtype=np.int64)
    for bound, cls in reversed(_SECTORS):
        out = np.where(angle < bound, cls, out)
    return np.where(np.hypot(v, a) < neutral_radius, 0, out).astype(np.int64)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _disk_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    radius = np.sqrt(rng.uniform(0, 1, n)) * 0.98
    radius = np.where(rng.uniform(0, 1, n) < 0.15, rng.uniform(0, 0.2, n), radius)
    theta = rng.uniform(0, 2 * math.pi, n)
    return radius * np.cos(theta), radius * np.sin(theta)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, n_waves: int = 3) -> np.ndarray:
    out = np.zeros_like(t)
    for _ in range(n_waves):
        freq = rng.uniform(0.3, 1.5)  # cycles per video
        out += rng.uniform(0.15, 0.45) * np.sin(
            2 * math.pi * freq * t + rng.uniform(0, 2 * math.pi)
        )
    return out


def _trajectory(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, num_frames)
    v0, a0 = _disk_points(rng, 1)
    v = v0[0] * 0.7 + _smooth_noise(rng, t)
    a = a0[0] * 0.7 + _smooth_noise(rng, t)
    r = np.maximum(np.hypot(v, a), 1e-9)
    squash = np.tanh(r) / r * 0.98 / math.tanh(max(1.0, r.max()))  # keep inside the disk
    return v * squash, a * squash


def _stills(seed: int, subject: int, n: int, size: int) -> VideoRecord:
    ident = sample_identity(_rng(seed, subject, 0))
    rng = _rng(seed, subject, 1)
    v, a = _disk_points(rng, n)
    pixels = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        blink = 1.0 if rng.uniform() < 0.03 else 0.0
        pixels[i] = render_face(size, ident, sample_view(rng), v[i], a[i], blink, rng)
    return _record(f"s{subject:03d}/stills", subject, v, a, pixels)


def _video(seed: int, subject: int, k: int, n: int, size: int) -> VideoRecord:
    ident = sample_identity(_rng(seed, subject, 0))
    rng = _rng(seed, subject, 2, k)
    v, a = _trajectory(rng, n)
    base = sample_view(rng)
    energy = 0.15 + 0.85 * (a + 1.0) / 2.0  # motion amplitude grows with arousal
    jitter = rng.normal(0, 1, (n, 3)) * energy[:, None] * np.array([0.02, 0.02, 0.06])
    drift = np.stack(
        [_smooth_noise(rng, np.linspace(0, 1, n), 2) * s for s in (0.04, 0.04, 0.1)], 1
    )
    blink = np.zeros(n)
    starts = rng.uniform(0, 1, n) < 0.02 + 0.12 * (a + 1.0) / 2.0
    for t in np.flatnonzero(starts):
        blink[t] = 1.0
        if t + 1 < n:
            blink[t + 1] = max(blink[t + 1], 0.5)
    pixels = np.empty((n, size, size, 3), dtype=np.uint8)
    for t in range(n):
        view = dict(base)
        view["dx"] = base["dx"] + drift[t, 0] + jitter[t, 0]
        view["dy"] = base["dy"] + drift[t, 1] + jitter[t, 1]
        view["roll"] = base["roll"] + drift[t, 2] + jitter[t, 2]
        pixels[t] = render_face(size, ident, view, v[t], a[t], blink[t], rng)
    return _record(f"s{subject:03d}/v{k:02d}", subject, v, a, pixels)


def _record(
    name: str, subject: int, v: np.ndarray, a: np.ndarray, pixels: np.ndarray
) -> VideoRecord:
    n = len(v)
    return VideoRecord(
        name=name,
        subject=f"s{subject:03d}",
        frames=np.arange(n, dtype=np.int64),
        valence=v.astype(np.float32),
        arousal=a.astype(np.float32),
        expression=circumplex_expression(v, a),
        labelled=np.ones(n, dtype=bool),
        pixels=pixels,
    )


def generate(
    split: str,
    mode: str,
    num_subjects: int,
    images_per_subject: int,
    videos_per_subject: int,
    frames_per_video: int,
    image_size: int,
    seed: int,
    fractions: tuple[float, float, float],
) -> list[VideoRecord]:
    """The records of one split (deterministic in all arguments)."""
    subjects = split_subjects(list(range(num_subjects)), split, fractions, seed)
    records = []
    for s in sorted(subjects):
        if mode == "static":
            records.append(_stills(seed, s, images_per_subject, image_size))
        else:
            records.extend(
                _video(seed, s, k, frames_per_video, image_size) for k in range(videos_per_subject)
            )
    return records


def _cached(cache_dir: str | None, params: dict) -> list[VideoRecord]:
    if cache_dir is None:
        return generate(**params)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"synthetic-{params['split']}-{params['mode']}-{key}.npz")
    if os.path.isfile(path):
        data = np.load(path, allow_pickle=False)
        names = [str(n) for n in data["names"]]
        return [
            _record(n, int(n[1:4]), data[f"v{i}"], data[f"a{i}"], data[f"x{i}"])
            for i, n in enumerate(names)
        ]
    records = generate(**params)
    os.makedirs(cache_dir, exist_ok=True)
    arrays = {"names": np.array([r.name for r in records])}
    for i, r in enumerate(records):
        arrays.update({f"v{i}": r.valence, f"a{i}": r.arousal, f"x{i}": r.pixels})
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return records


@register("synthetic")
def synthetic(
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    *,
    num_subjects: int = 40,
    images_per_subject: int = 100,
    videos_per_subject: int = 4,
    frames_per_video: int = 64,
    image_size: int = 64,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    cache_dir: str | None = None,
    verbose: bool = False,
    **kwargs,
) -> AffectDataset:
    """The embedded synthetic data set (see the module docstring).

    Args:
        root: ignored unless ``cache_dir`` is None, in which case a given root is used as
            the cache folder.
        split, mode: as in :func:`hoconv.app.data.create_dataset`.
        num_subjects: identities in total (all splits).
        images_per_subject: stills per subject (static mode).
        videos_per_subject, frames_per_video: video mode sizes.
        image_size: side in pixels.
        seed: generation and split seed.
        fractions: train / val / test subject fractions.
        cache_dir: folder for the ``.npz`` cache (None = memory only).
        verbose: print the loading summary.
        **kwargs: forwarded to :class:`hoconv.app.data.base.AffectDataset` (clip_length,
            clip_stride, sampling, clips_per_video, transform).
    """
    check_choice("split", split, SPLITS)
    check_choice("mode", mode, MODES)
    for name, value in (
        ("num_subjects", num_subjects),
        ("images_per_subject", images_per_subject),
        ("videos_per_subject", videos_per_subject),
        ("frames_per_video", frames_per_video),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_subjects < 3:
        raise ValueError(f"num_subjects must be >= 3 for train/val/test splits, got {num_subjects}")
    if int(image_size) < 8:  # before rendering: OpenCV fails on tiny canvases
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
    params = dict(
        split=split,
        mode=mode,
        num_subjects=int(num_subjects),
        images_per_subject=int(images_per_subject),
        videos_per_subject=int(videos_per_subject),
        frames_per_video=int(frames_per_video),
        image_size=int(image_size),
        seed=int(seed),
        fractions=tuple(float(f) for f in fractions),
    )
    records = _cached(cache_dir if cache_dir is not None else root, params)
    report = LoadReport("synthetic", split)
    return AffectDataset(
        records, report, mode=mode, image_size=image_size, verbose=verbose, seed=seed, **kwargs
    )
