"""Clip sampling over a video of ``num_frames`` frames.

A clip is ``length`` frames taken every ``stride`` frames. Positions index the video's
frame list (0 .. num_frames - 1), not the data set's frame numbers.

* :func:`random_clip` - one random clip (training).
* :func:`eval_windows` - windows tiling the video so that every frame is marked ``new``
  in exactly one window (evaluation): with ``stride`` s the video splits into s phases
  (positions r, r + s, r + 2s, ...), each tiled by consecutive windows; the last window of
  a phase is shifted back to end at the phase's last frame (full context) and marks only
  the frames not covered before.
* Videos shorter than a clip are padded by repeating their last frame; padded slots are
  marked invalid.
"""

from __future__ import annotations

import numpy as np


def _check(num_frames: int, length: int, stride: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    if stride < 1:
        raise ValueError(f"clip stride must be >= 1, got {stride}")


def _pad(positions: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``positions`` to ``length`` by repeating the last one; return (positions, valid)."""
    valid = np.zeros(length, dtype=bool)
    valid[: len(positions)] = True
    out = np.full(length, positions[-1], dtype=np.int64)
    out[: len(positions)] = positions
    return out, valid


def random_clip(
    num_frames: int, length: int, stride: int = 1, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A random clip.

    Returns:
        ``positions`` int64 (length,) and ``valid`` bool (length,) (False = padding).
    """
    _check(num_frames, length, stride)
    rng = np.random.default_rng() if rng is None else rng
    span = (length - 1) * stride + 1
    if num_frames >= span:
        start = int(rng.integers(0, num_frames - span + 1))
        return start + stride * np.arange(length, dtype=np.int64), np.ones(length, dtype=bool)
    # Short video: the largest stride-s subsequence from a random phase, then padding.
    phase = int(rng.integers(0, min(stride, num_frames)))
    return _pad(np.arange(phase, num_frames, stride, dtype=np.int64)[:length], length)


def eval_windows(
    num_frames: int, length: int, stride: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Windows covering every frame exactly once.

    Returns:
        list of ``(positions, new)``: int64 (length,) positions and a bool (length,) mask,
        True where the frame is real and not counted by an earlier window.
    """
    _check(num_frames, length, stride)
    windows = []
    for phase in range(min(stride, num_frames)):
        seq = np.arange(phase, num_frames, stride, dtype=np.int64)
        if len(seq) <= length:
            windows.append(_pad(seq, length))
            continue
        covered = 0
        while covered < len(seq):
            start = min(covered, len(seq) - length)
            positions = seq[start : start + length]
            new = np.arange(start, start + length) >= covered
            windows.append((positions, new))
            covered = start + length
    return windows
