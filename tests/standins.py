"""Tiny models and data sets for the engine tests (fast, learnable, deterministic).

``install()`` registers them next to the real registries under ``test_*`` names.
"""

from __future__ import annotations

import importlib
import time

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv (dim-D) -> ReLU -> global pool over space (keeps time for 3-D) -> linear."""

    def __init__(
        self,
        dim: int = 2,
        num_outputs: int = 2,
        width: int = 4,
        nan_after_steps: int | None = None,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        self.dim = dim
        # no conv bias before BN (as in ResNets): its gradient is rounding noise, which Adam
        # turns into lr-sized steps that differ between runs
        self.conv = conv(3, width, 3, padding=1, bias=not batchnorm)
        bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d
        self.bn = bn(width) if batchnorm else nn.Identity()
        self.head = nn.Linear(width, num_outputs)
        self.nan_after_steps = nan_after_steps
        self._train_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.dim + 2:
            raise ValueError(f"TinyNet{self.dim}d expects {self.dim + 2}-D input, got {x.dim()}-D")
        h = torch.relu(self.bn(self.conv(x)))
        if self.dim == 2:
            out = self.head(h.mean(dim=(2, 3)))  # (N, O)
        else:
            out = self.head(h.mean(dim=(3, 4)).transpose(1, 2))  # (N, T, O)
        if self.training:
            self._train_calls += 1
            if self.nan_after_steps is not None and self._train_calls > self.nan_after_steps:
                out = out * float("nan")
        return out


class TinyCPNet(nn.Module):
    """CP conv (2-D, transducible) -> ReLU -> mean over H, W (time kept) -> linear."""

    def __init__(self, num_outputs: int = 2, width: int = 4) -> None:
        super().__init__()
        from hoconv.layers import CPConv

        self.conv = CPConv(3, width, 3, dim=2, rank=4, padding=1)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean(dim=(-2, -1))  # (N, C) or (N, C, T)
        return self.head(h if h.dim() == 2 else h.transpose(1, 2))  # (N, O) or (N, T, O)


class TinyAffect(torch.utils.data.Dataset):
    """V/A written into the pixels (plus noise): a linear probe can learn it.

    Static samples follow the hoconv data contract; video clips of ``clip_length`` frames have
    smooth V/A, the last frame of every third clip masked out (padding).
    """

    num_expressions = 0

    def __init__(
        self,
        split: str = "train",
        mode: str = "static",
        size: int = 32,
        image_size: int = 8,
        clip_length: int = 4,
        empty: bool = False,
        delay: float = 0.0,
        classify: bool = False,
        unreadable_every: int = 0,
    ) -> None:
        self.delay, self.classify = delay, classify
        self.unreadable_every = unreadable_every  # sample i is None when i % it == 0
        self.num_classes = 4 if classify else None
        self.split, self.mode, self.image_size, self.clip_length = (
            split,
            mode,
            image_size,
            clip_length,
        )
        self.size = 0 if empty else size
        self.offset = {"train": 0, "val": 10_000, "test": 20_000}[split]
        self.summary = {"loaded": self.size}

    def __len__(self) -> int:
        return self.size

    def _frame(self, g: torch.Generator, v: float, a: float) -> torch.Tensor:
        s = self.image_size
        img = 0.3 * torch.randn(3, s, s, generator=g)
        img[0] += v
        img[1] += a
        img[2] += v * a
        return img

    def __getitem__(self, i: int) -> dict:
        if self.delay:
            time.sleep(self.delay)
        if self.unreadable_every and i % self.unreadable_every == 0:
            return None  # as AffectDataset returns for an unreadable image
        g = torch.Generator().manual_seed(self.offset + i)
        if self.mode == "static":
            v, a = (torch.rand(2, generator=g) * 2 - 1).tolist()
            if self.classify:  # quadrant of the circumplex
                return {"input": self._frame(g, v, a), "label": torch.tensor(2 * (v > 0) + (a > 0))}
            return {
                "input": self._frame(g, v, a),
                "valence": torch.tensor(v),
                "arousal": torch.tensor(a),
                "expression": torch.tensor(-1),
                "video": f"{self.split}{i // 8}",
                "frame": torch.tensor(i % 8),
            }
        t = self.clip_length
        v0, a0, dv, da = (torch.rand(4, generator=g) * 2 - 1).tolist()
        vs = [max(-1.0, min(1.0, v0 + 0.2 * dv * k)) for k in range(t)]
        as_ = [max(-1.0, min(1.0, a0 + 0.2 * da * k)) for k in range(t)]
        frames = torch.stack([self._frame(g, v, a) for v, a in zip(vs, as_)], dim=1)  # (3, T, H, W)
        mask = torch.ones(t, dtype=torch.bool)
        if i % 3 == 2:
            mask[-1] = False
        return {
            "input": frames,
            "valence": torch.tensor(vs),
            "arousal": torch.tensor(as_),
            "expression": torch.full((t,), -1),
            "mask": mask,
            "video": f"{self.split}{i}",
            "frames": torch.arange(t),
        }


def create_tiny_dataset(name: str, root=None, split="train", mode="static", **kwargs):
    if root is not None:
        raise FileNotFoundError(f"{root}: the tiny data set has no files")
    return TinyAffect(split=split, mode=mode, **kwargs)


def install() -> None:
    """Make ``test_tiny2d`` / ``test_tiny3d`` models and the ``test_tiny`` data set available."""
    models, data = (
        importlib.import_module("hoconv.models"),
        importlib.import_module("hoconv.app.data"),
    )
    real_model, real_data = models.create_model, data.create_dataset
    if getattr(real_model, "_standin", False):
        return

    def create_model(name, **kwargs):
        if name in ("test_tiny2d", "test_tiny3d"):
            return TinyNet(dim=int(name[-2]), **kwargs)
        if name == "test_tiny_cp":
            return TinyCPNet(**kwargs)
        if name == "test_tiny_bn":
            return TinyNet(dim=2, batchnorm=True, **kwargs)
        return real_model(name, **kwargs)

    def create_dataset(name, root=None, split="train", mode="static", **kwargs):
        if name == "test_tiny":
            return create_tiny_dataset(name, root, split, mode, **kwargs)
        return real_data(name, root=root, split=split, mode=mode, **kwargs)

    create_model._standin = True
    models.create_model = create_model
    data.create_dataset = create_dataset


def tiny_config(**overrides) -> dict:
    """A resolved train config for the tiny stand-ins."""
    from hoconv.app.engine import config as config_io

    base = {
        "data": "test_tiny",
        "model": "test_tiny2d",
        "epochs": 2,
        "batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "progress": False,
        "lr": 0.01,
        "lr_step": 1,
        "lr_gamma": 0.5,
        "data_kwargs": {"size": 32},
    }
    return config_io.resolve("train", None, {**base, **overrides})


def tiny_checkpoint(path, config: dict, name: str = "test_tiny2d", **kwargs):
    """``(model, path)``: a freshly initialised (seed 0) registry model written as a checkpoint.

    ``name`` is a stand-in (``install()`` is called) or a zoo model; ``kwargs`` its keywords.
    """
    from hoconv.app.engine import checkpoint as ck

    install()
    torch.manual_seed(0)
    model = importlib.import_module("hoconv.models").create_model(name, **kwargs)
    spec = {"name": name, "kwargs": kwargs, "transductions": []}
    ckpt = ck.make_checkpoint(
        model_spec=spec, state_dict=model.state_dict(), epoch=1, config=config
    )
    return model, ck.write_checkpoint(path, ckpt)
