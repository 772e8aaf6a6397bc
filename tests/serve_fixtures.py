"""Media and a checkpoint file for the `hoconv serve` tests (made here, nothing downloaded).

Faces come from the synthetic renderer (hoconv.app.data.synth_render), drawn frontal with a
light skin tone onto a plain background, which the default MTCNN detector finds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from hoconv.app.data.synth_render import render_face, sample_identity, sample_view

W, H, FACE = 240, 180, 120


def frontal_face(seed: int) -> tuple[dict, dict, np.random.Generator]:
    """``(identity, view, rng)`` of a frontal, light-skinned face that MTCNN and Haar find.

    Draw it with ``render_face(size, identity, view, valence, arousal, 0.0, rng)``.
    """
    rng = np.random.default_rng(seed)
    ident = sample_identity(rng)
    ident["skin"] = np.array([225.0, 190.0, 160.0])
    view = sample_view(rng)
    view.update(roll=0.0, yaw=0.0, dx=0.0, dy=0.0, clutter=0, light=0.1, noise=2.0, scale=0.36,
                gain=1.0)  # fmt: skip
    return ident, view, rng


def face_image(t: int = 0, n: int = 8, seed: int = 3, blank: bool = False) -> np.ndarray:
    """One RGB frame ``(H, W, 3)``: a face whose V/A moves on a circle with ``t / n``."""
    ident, view, rng = frontal_face(seed)
    img = np.full((H, W, 3), (90, 90, 140), np.uint8)
    if not blank:
        v, a = 0.6 * np.sin(2 * np.pi * t / n), 0.5 * np.cos(2 * np.pi * t / n)
        x0 = 50 + int(15 * np.sin(t / 4))
        img[30 : 30 + FACE, x0 : x0 + FACE] = render_face(FACE, ident, view, v, a, 0.0, rng)
    return img


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def write_video(path: Path, frames: int = 8, fps: float = 8.0) -> Path:
    """An mp4v video of ``frames`` face frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for t in range(frames):
        writer.write(cv2.cvtColor(face_image(t, frames), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_checkpoint(path: Path, name: str = "cp_resnet18_2d", image_size: int = 32) -> Path:
    """A tiny untrained zoo checkpoint (engine format) trained 'on' the synthetic set.

    Its config says affect task, ``image_size`` pixels, clips of 4 frames (video models, whose
    name ends in ``3d``); used by the serve, browser and predict tests.
    """
    from hoconv import models
    from hoconv.app import engine

    torch.manual_seed(0)
    kwargs = {"width": 4, "num_outputs": 10}
    model = models.create_model(name, **kwargs)
    mode = "video" if name.endswith("3d") else "static"
    config = {"task": "affect", "mode": mode, "data": "synthetic",
              "data_kwargs": {"image_size": image_size, "clip_length": 4}}  # fmt: skip
    ckpt = engine.make_checkpoint(model_spec={"name": name, "kwargs": kwargs},
                                  state_dict=model.state_dict(), epoch=1, config=config)  # fmt: skip
    engine.write_checkpoint(path, ckpt)
    return path
