"""Build the pieces of a run from its config: data sets, model, optimizer, scheduler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hoconv.app.engine import checkpoint as ckpt_io


class Framewise(nn.Module):
    """Apply a 2-D (image) model to every frame of a clip: (N, C, T, H, W) -> (N, T, O)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"Framewise expects clips (N, C, T, H, W), got shape {tuple(x.shape)}")
        n, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # (N*T, C, H, W)
        out = self.model(frames)  # (N*T, O)
        return out.reshape(n, t, -1)  # (N, T, O)


def make_dataset(cfg: dict, split: str, *, training: bool = False) -> Dataset:
    """``hoconv.app.data.create_dataset`` for ``split`` with one-line errors for bad input.

    Args:
        cfg: the run's config.
        split: the split to read.
        training: the set the run learns from: it gets ``cfg["augment"]`` when that is not
            None (None leaves each data set its own default, see ``train.yaml``).
    """
    from hoconv.app.data import create_dataset

    root = cfg.get("data_root")
    if root is not None and not Path(root).exists():
        raise FileNotFoundError(f"--data-root: {root} does not exist")
    kwargs = dict(cfg["data_kwargs"])
    if training and cfg.get("augment") is not None:
        kwargs["augment"] = bool(cfg["augment"])
    dataset = create_dataset(cfg["data"], root=root, split=split, mode=cfg["mode"], **kwargs)
    if len(dataset) == 0:
        summary = getattr(dataset, "summary", None)
        detail = f" (loader summary: {summary})" if summary else ""
        raise ValueError(f"data set {cfg['data']!r} split {split!r} is empty{detail}")
    return dataset


def infer_num_outputs(cfg: dict, dataset: Dataset) -> int:
    """Outputs the model needs: V/A (+ expression logits when the data has them), or classes."""
    if cfg.get("num_outputs"):
        return int(cfg["num_outputs"])
    from hoconv.app.engine import tasks

    return tasks.get(cfg["task"]).num_outputs(dataset)


def spatial_dims(model: nn.Module) -> int | None:
    """Axes of the model's input after (N, C): 2 for images, 3 for clips (None: unknown).

    A model that declares ``data_dim`` (the zoo's models) is taken at its word; otherwise the
    first convolution's number of spatial axes.
    """
    data_dim = getattr(model, "data_dim", None)
    if isinstance(data_dim, int):
        return data_dim
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.weight.dim() - 2
        dim = getattr(module, "dim", None)
        if isinstance(dim, int) and hasattr(module, "kernel_size"):
            return dim
    return None


def make_model(
    cfg: dict, dataset: Dataset, resume_spec: dict | None = None
) -> tuple[nn.Module, dict]:
    """The model of the run and its rebuildable spec (name, kwargs, transductions).

    ``resume_spec`` (from ``last.pt``) wins; else ``init`` (a checkpoint whose weights and
    transductions are taken); else a fresh ``create_model(model, **model_kwargs)``.
    """
    if resume_spec is not None:
        return ckpt_io.build_model(resume_spec), resume_spec
    if cfg.get("init"):
        model, meta = ckpt_io.load_model(cfg["init"])
        model.train()
        return model, meta["model"]
    from hoconv.models import create_model
    from hoconv.models.registry import is_zoo_model

    kwargs = dict(cfg["model_kwargs"])
    kwargs.setdefault("num_outputs", infer_num_outputs(cfg, dataset))
    if cfg.get("task") == "affect" and is_zoo_model(cfg["model"]):  # new affect models: V/A
        kwargs.setdefault("bound_va", True)  # in [-1, 1] by a tanh; recorded in the spec
    spec = {"name": cfg["model"], "kwargs": kwargs, "transductions": []}
    return create_model(cfg["model"], **kwargs), spec


INHERITED_DATA_KEYS = ("image_size",)


def inherit_data_settings(cfg: dict) -> dict:
    """With ``init``, take the input size the checkpoint was trained at unless set.

    A model fine-tuned from a checkpoint should see inputs like those it learnt from; the
    run's own ``data_kwargs`` win when they set the key.
    """
    if not cfg.get("init"):
        return cfg
    source = (ckpt_io.read_checkpoint(cfg["init"]).get("config") or {}).get("data_kwargs") or {}
    inherited = {k: source[k] for k in INHERITED_DATA_KEYS if k in source}
    return {**cfg, "data_kwargs": {**inherited, **cfg["data_kwargs"]}}


def check_mode(model: nn.Module, name: str, mode: str) -> nn.Module:
    """Refuse a 3-D model on images; wrap a 2-D model to run frame by frame on clips."""
    dims = spatial_dims(model)
    if mode == "static" and dims is not None and dims > 2:
        raise ValueError(
            f"model {name!r} is {dims}-D (expects clips (N, 3, T, H, W)) but --mode static gives "
            "images (N, 3, H, W); use --mode video or a 2-D model"
        )
    if mode == "video" and dims == 2:
        return Framewise(model)
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with ``requires_grad`` (all, or the temporal factors in that phase)."""
    return [p for p in model.parameters() if p.requires_grad]


def count(params: list[nn.Parameter] | nn.Module) -> int:
    """Number of scalars in a module or a list of parameters."""
    items = params.parameters() if isinstance(params, nn.Module) else params
    return sum(p.numel() for p in items)


def make_optimizer(cfg: dict, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (the paper) or SGD with momentum, on the trainable parameters."""
    if not params:
        raise ValueError("no trainable parameter (check --phase)")
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
        )
    return torch.optim.Adam(
        params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"]
    )


def make_scheduler(cfg: dict, optimizer: torch.optim.Optimizer):
    """Step decay (x``lr_gamma`` every ``lr_step`` epochs), milestones, plateau, cosine or none."""
    kind = cfg["scheduler"]
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg["lr_step"], gamma=cfg["lr_gamma"])
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(cfg["lr_milestones"]), gamma=cfg["lr_gamma"]
        )
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(cfg["epochs"], 1))
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg["lr_gamma"]
        )
    return None


def make_affect_loss(cfg: dict) -> nn.Module:
    """The paper's loss (shake-shake RMSE/PCC/CCC [+ cross-entropy]) or fixed weights."""
    from hoconv.app.affect.losses import AffectLoss

    weights = cfg.get("loss_weights")
    if weights is None:
        return AffectLoss()
    if len(weights) != 3 or not all(isinstance(w, (int, float)) and w >= 0 for w in weights):
        raise ValueError(f"loss_weights: expected three non-negative numbers, got {weights!r}")
    if math.isclose(sum(weights), 0.0):
        raise ValueError("loss_weights: at least one weight must be positive")
    return AffectLoss(weights=tuple(float(w) for w in weights))


def seed_epoch(dataset: Dataset, seed: int, epoch: int) -> None:
    """Make a data set's own randomness (clip sampling, augmentation) a function of the epoch.

    Calls ``dataset.set_epoch(epoch)`` when it has one; otherwise reseeds a numpy
    ``Generator`` held as ``dataset.rng``. Needed for runs that resume to reproduce.
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    elif isinstance(getattr(dataset, "rng", None), np.random.Generator):
        dataset.rng = np.random.default_rng([seed, epoch])
