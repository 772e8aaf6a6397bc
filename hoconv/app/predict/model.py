"""What a checkpoint needs at prediction time: input size, static or temporal, outputs.

:func:`load_checkpoint` reads a checkpoint with :func:`hoconv.app.engine.load_model`;
:class:`Scorer` wraps the model and the settings read from the checkpoint's meta (image
size, clip length, crop margin as at training) and refuses checkpoints of the wrong kind
(classification models, fewer than two outputs, clip-level video models) with a one-line
message.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import torch
from torch import nn

from hoconv.app.affect.labels import EXPRESSIONS
from hoconv.app.data.transforms import frames_to_tensor
from hoconv.app.engine.build import spatial_dims

SYNTHETIC_WARNING = (
    "checkpoint trained on the synthetic data set: its scores are not meaningful for real "
    "faces; train on AffectNet or AFEW-VA (`hoconv train --data affectnet --data-root DIR`, "
    "see the README's data section)"
)


# The synthetic faces fill their image as an aligned crop of margin 0.4 does (eye distance
# 0.25 of the side, measured with MTCNN's landmarks on 37 renders; 0.30 at margin 0.2).
SYNTHETIC_MARGIN = 0.4


def model_display_name(spec: dict | None, default: str = "") -> str:
    """The model's registered name with one ``->Nd`` per transduction (``cp_resnet18_2d->3d``).

    ``spec["name"]`` stays the registry name (the model is rebuilt from it and its
    ``transductions``); this is the name shown in logs, JSON and export sidecars.
    """
    spec = spec or {}
    name = str(spec.get("name") or default)
    steps = [int((step or {}).get("dims", 1)) for step in spec.get("transductions") or []]
    if not steps:
        return name
    order = re.search(r"_(\d)d$", name)
    if order is None:  # the source order is not in the name: say how many axes were added
        return f"{name}+{sum(steps)}d"
    return f"{name}->{int(order.group(1)) + sum(steps)}d"


def trained_on(meta: dict) -> str | None:
    """The data set the checkpoint was trained on (``config["data"]``), if recorded."""
    return (meta.get("config") or {}).get("data")


def load_checkpoint(path: str, device: str = "cpu") -> tuple[nn.Module, dict]:
    """``(model, meta)`` of a hoconv checkpoint (see :func:`hoconv.app.engine.load_model`)."""
    try:
        from hoconv.app.engine import load_model
    except ImportError as err:  # pragma: no cover - only before the engine is installed
        raise ValueError(f"--checkpoint: hoconv.app.engine is not available ({err})") from err
    return load_model(path, device=device)


def _data_default(name: str | None, key: str):
    """Default of ``key`` for data set ``name`` (its constructor, else AffectDataset's)."""
    from hoconv.app import data
    from hoconv.app.data.base import AffectDataset

    for fn in (data._REGISTRY.get(name or ""), AffectDataset.__init__):
        if fn is None:
            continue
        param = inspect.signature(fn).parameters.get(key)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return None


def training_setting(meta: dict, key: str):
    """``key`` (image_size, clip_length, margin) as the checkpoint's training data used it."""
    config = meta.get("config") or {}
    kwargs = config.get("data_kwargs") or {}
    for value in (kwargs.get(key), config.get(key)):
        if value is not None:
            return value
    return _data_default(config.get("data"), key)


class Scorer:
    """A model ready to score face crops, with the settings of its training run.

    Args:
        model: the network (set to eval mode).
        meta: checkpoint meta (``config`` with ``task``, ``mode``, ``data``, ``data_kwargs``).
        image_size, clip_length, margin: override the values read from ``meta`` (the
            frame step inside a clip, ``clip_stride``, is always the training one).
            ``align_margin`` (aligned crops) is ``margin``, or :data:`SYNTHETIC_MARGIN`
            for a synthetic-data checkpoint when no margin is given.
        device: where to run.
    """

    def __init__(
        self,
        model: nn.Module,
        meta: dict,
        image_size: int | None = None,
        clip_length: int | None = None,
        margin: float | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        config = meta.get("config") or {}
        if config.get("task", "affect") != "affect":
            raise ValueError(
                f"--checkpoint: a {config.get('task')!r} model; predict needs an affect "
                "(valence/arousal) checkpoint"
            )
        dims = spatial_dims(model)
        if dims not in (2, 3):
            raise ValueError(
                f"--checkpoint: the model takes {dims}-D inputs; predict needs an image (2-D) "
                "or clip (3-D) model"
            )
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.temporal = dims == 3
        self.image_size = int(image_size or training_setting(meta, "image_size") or 0)
        if self.image_size < 8:
            raise ValueError("--image-size: the checkpoint does not say its image size; pass it")
        self.clip_length = int(clip_length or training_setting(meta, "clip_length") or 16)
        self.clip_stride = int(training_setting(meta, "clip_stride") or 1)
        self.trained_on = trained_on(meta)
        self.margin = float(
            margin if margin is not None else training_setting(meta, "margin") or 0.2
        )
        # aligned (MTCNN) crops: the training margin, except for the uncropped renders
        synthetic = margin is None and self.trained_on == "synthetic"
        self.align_margin = SYNTHETIC_MARGIN if synthetic else self.margin
        self.name = model_display_name(meta.get("model"), type(model).__name__)
        self.num_outputs = self._probe()
        k = self.num_outputs - 2
        self.expressions = (
            EXPRESSIONS if k == len(EXPRESSIONS) else tuple(f"class_{i}" for i in range(k))
        )

    @property
    def mode(self) -> str:
        """``"video"`` for a temporal model, else ``"static"``."""
        return "video" if self.temporal else "static"

    def _probe(self) -> int:
        """Run one dummy input: check the output layout, return the number of outputs."""
        s, t = self.image_size, self.clip_length
        shape = (1, 3, t, s, s) if self.temporal else (1, 3, s, s)
        try:
            out = self._forward(torch.zeros(shape))
        except Exception as err:  # noqa: BLE001 - report the model's complaint in one line
            msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"--checkpoint: the model rejects {tuple(shape)} inputs ({msg})"
            ) from err
        want = (1, t) if self.temporal else (1,)
        if tuple(out.shape[:-1]) != want:
            raise ValueError(
                f"--checkpoint: expected outputs {(*want, 'O')} for a {self.mode} model, got "
                f"{tuple(out.shape)} (a clip-level model cannot give per-frame predictions)"
            )
        if out.shape[-1] < 2:
            raise ValueError(
                f"--checkpoint: the model has {out.shape[-1]} output(s); predict needs columns "
                "0, 1 = valence, arousal"
            )
        return int(out.shape[-1])

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device)).float().cpu()

    def score_images(self, crops: np.ndarray) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 RGB crops -> ``(B, O)`` raw outputs (static models)."""
        x = frames_to_tensor(crops).permute(1, 0, 2, 3)  # (B, 3, S, S)
        return self._forward(x).numpy()

    def score_clips(self, clips: np.ndarray) -> np.ndarray:
        """``(B, T, S, S, 3)`` uint8 RGB clips -> ``(B, T, O)`` raw outputs (temporal models)."""
        x = torch.stack([frames_to_tensor(c) for c in clips])  # (B, 3, T, S, S)
        return self._forward(x).numpy()
