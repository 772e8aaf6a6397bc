"""Image -> tensor conversion and clip-consistent augmentation.

Input normalisation (all data sets): RGB, ``x = (pixel / 255 - MEAN) / STD`` with
``MEAN = STD = 0.5`` per channel, i.e. values in ``[-1, 1]``.

Augmentations draw their random parameters once per call and apply them to every frame
of a clip, so a clip stays temporally consistent.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> normalised float32 ``(3, H, W)``."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
    return _normalise(x.float())


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 RGB -> normalised float32 ``(3, T, H, W)``."""
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    return _normalise(x.float())


def _normalise(x: torch.Tensor) -> torch.Tensor:
    shape = (3,) + (1,) * (x.dim() - 1)
    mean = torch.tensor(MEAN, dtype=x.dtype).view(shape)
    std = torch.tensor(STD, dtype=x.dtype).view(shape)
    return (x / 255.0 - mean) / std


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation: back to ``[0, 1]``."""
    shape = (3,) + (1,) * (x.dim() - 1)
    mean = torch.tensor(MEAN, dtype=x.dtype).view(shape)
    std = torch.tensor(STD, dtype=x.dtype).view(shape)
    return x * std + mean


class ClipAugment:
    """Random crop-and-resize, horizontal flip, brightness / contrast, one draw per call.

    Works on a normalised ``(3, H, W)`` image or ``(3, T, H, W)`` clip; every frame of a
    clip gets the same crop, flip and colour change. Horizontal flips leave valence and
    arousal unchanged.

    Args:
        scale: range of the crop side as a fraction of the image side.
        flip_p: probability of a horizontal flip.
        brightness: maximum additive brightness change (in normalised units / 2).
        contrast: maximum relative contrast change.
        generator: optional ``torch.Generator`` for reproducible draws.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.85, 1.0),
        flip_p: float = 0.5,
        brightness: float = 0.2,
        contrast: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if not 0 <= flip_p <= 1:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        self.scale = scale
        self.flip_p = flip_p
        self.brightness = brightness
        self.contrast = contrast
        self.generator = generator

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4) or x.shape[0] != 3:
            raise ValueError(f"expected (3, H, W) or (3, T, H, W), got shape {tuple(x.shape)}")
        clip = x if x.dim() == 4 else x.unsqueeze(1)  # (3, T, H, W)
        h, w = clip.shape[-2:]
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * self._rand()
        ch, cw = max(1, round(h * s)), max(1, round(w * s))
        top = int(self._rand() * (h - ch + 1))
        left = int(self._rand() * (w - cw + 1))
        clip = clip[..., top : top + ch, left : left + cw]
        frames = clip.permute(1, 0, 2, 3)  # (T, 3, ch, cw)
        frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False)
        if self._rand() < self.flip_p:
            frames = frames.flip(-1)
        gain = 1.0 + self.contrast * (2 * self._rand() - 1)
        shift = self.brightness * (2 * self._rand() - 1)
        mean = frames.mean()
        frames = ((frames - mean) * gain + mean + shift).clamp(-1.0, 1.0)
        out = frames.permute(1, 0, 2, 3)  # (3, T, H, W)
        return out if x.dim() == 4 else out[:, 0]
