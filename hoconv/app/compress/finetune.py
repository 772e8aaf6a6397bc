"""Fine-tune a compressed model with knowledge distillation from the original (the teacher).

Loss per step, on the rows :meth:`hoconv.app.engine.tasks.Task.rows` gives (labelled frames / samples):

* affect: ``task_weight x AffectLoss + mse_weight x MSE(student V/A, teacher V/A)
  + kl_weight x T^2 KL(teacher || student)`` on the expression logits at temperature ``T``
  (the KL term only when the model has expression outputs);
* classify: ``task_weight x cross-entropy + kl_weight x T^2 KL(teacher || student)`` at ``T``.

Data come from the run's config (the checkpoint's, with the command line's overrides) through
:func:`hoconv.app.engine.build.make_dataset`, as in ``hoconv train``; the validation metric is
:meth:`hoconv.app.engine.tasks.Task.score` (mean V/A CCC or top-1) on the config's ``val_split``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from hoconv.app.data.base import collate_skipping
from hoconv.app.engine import build, tasks
from hoconv.app.engine.predict import predict_dataset


@dataclass(frozen=True)
class DistillSettings:
    """Weights and optimisation of the distillation fine-tune (the CLI flags' defaults)."""

    epochs: int = 0
    lr: float = 5e-4
    task_weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 1.0
    temperature: float = 4.0
    max_batches: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(
                f"fine-tune: epochs must be >= 0, lr and temperature > 0 (got epochs={self.epochs}, "
                f"lr={self.lr}, temperature={self.temperature})"
            )
        if min(self.task_weight, self.mse_weight, self.kl_weight) < 0:
            raise ValueError("fine-tune: the loss weights must be >= 0")


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, mean over rows."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2


def distillation_loss(
    task: str, student: torch.Tensor, teacher: torch.Tensor, settings: DistillSettings
) -> torch.Tensor:
    """The teacher-matching part of the loss on per-row outputs (M, O) (see the module doc)."""
    if task == "classify":
        return settings.kl_weight * _kl(student, teacher, settings.temperature)
    loss = settings.mse_weight * F.mse_loss(student[:, :2], teacher[:, :2])
    if student.shape[1] > 2:
        loss = loss + settings.kl_weight * _kl(student[:, 2:], teacher[:, 2:], settings.temperature)
    return loss


def validation_score(net: nn.Module, cfg: dict, dataset) -> tuple[float, dict]:
    """``(score, metrics)`` of ``net`` on ``dataset`` (mean V/A CCC or top-1)."""
    task = tasks.get(cfg["task"])
    preds = predict_dataset(net, dataset, task=task, batch_size=cfg["batch_size"],
                            workers=cfg["workers"])  # fmt: skip
    metrics = task.metrics(preds)
    return task.score(metrics), metrics


def _epoch(student, teacher, loader, optimizer, cfg, settings, task) -> float:
    """One distillation pass; returns the mean loss of its steps."""
    student.train()
    total, steps = 0.0, 0
    for step, batch in enumerate(loader):
        if settings.max_batches and step >= settings.max_batches:
            break
        if batch is None:  # every sample of the batch unreadable (counted by the loader)
            continue
        x = batch["input"]
        with torch.no_grad():
            teacher_rows = task.rows(batch, teacher(x))
        rows = task.rows(batch, student(x))
        if rows["pred"].shape[0] == 0:
            continue
        loss = distillation_loss(cfg["task"], rows["pred"], teacher_rows["pred"], settings)
        if settings.task_weight:
            loss = loss + settings.task_weight * task.loss(rows)
        if not torch.isfinite(loss):
            raise ValueError(
                f"fine-tune: non-finite loss at step {step + 1}; try a lower --finetune-lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
    return total / max(steps, 1)


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    cfg: dict,
    settings: DistillSettings,
    name: str = "",
    progress=None,
) -> tuple[nn.Module, list[dict]]:
    """Distil ``teacher`` into ``student`` for ``settings.epochs`` epochs on ``cfg``'s data.

    The returned model is the epoch with the best validation score (the compressed model
    itself, epoch 0, counts too), as ``hoconv train`` keeps ``best.pt``. ``progress`` (a
    callable) gets one line per epoch.

    Returns:
        ``(best_student, history)``; history rows ``{"epoch", "loss", "score"}``.
    """
    train_ds = build.make_dataset(cfg, cfg["train_split"], training=True)
    val_ds = build.make_dataset(cfg, cfg["val_split"])
    student_net = build.check_mode(student, name, cfg["mode"])
    teacher_net = build.check_mode(teacher, name, cfg["mode"]).eval()
    loader = DataLoader(train_ds, batch_size=cfg["batch_size"], shuffle=True, drop_last=False,
                        num_workers=cfg["workers"], collate_fn=collate_skipping)  # fmt: skip
    optimizer = torch.optim.Adam(build.trainable_parameters(student), lr=settings.lr)
    task = tasks.get(cfg["task"], cfg)  # holds the training loss (affect: the run's weights)
    best_score, _ = validation_score(student_net, cfg, val_ds)
    best_state, history = copy.deepcopy(student.state_dict()), [{"epoch": 0, "score": best_score}]
    for epoch in range(settings.epochs):
        torch.manual_seed(int(cfg.get("seed", 0)) * 100_003 + epoch)
        loss = _epoch(student_net, teacher_net, loader, optimizer, cfg, settings, task)
        score, _ = validation_score(student_net, cfg, val_ds)
        history.append({"epoch": epoch + 1, "loss": loss, "score": score})
        if progress is not None:
            progress(f"fine-tune epoch {epoch + 1}/{settings.epochs}: loss {loss:.4f}, "
                     f"val score {score:.4f}")  # fmt: skip
        if score > best_score:
            best_score, best_state = score, copy.deepcopy(student.state_dict())
    student.load_state_dict(best_state)
    return student.eval(), history
