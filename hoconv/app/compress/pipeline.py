"""`compress` end to end on a checkpoint: compress, measure, optionally distil, report, write."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hoconv.app.compress.finetune import DistillSettings, finetune, validation_score
from hoconv.app.engine import build
from hoconv.app.engine import config as config_io
from hoconv.compress.apply import CompressReport, compress_model
from hoconv.compress.solver import Budget

DATA_KEYS = ("data", "data_root", "mode", "data_kwargs", "batch_size", "workers", "seed",
             "train_split", "val_split", "task")  # fmt: skip


def data_config(saved: dict | None, overrides: dict | None) -> dict | None:
    """The data part of the run config: packaged defaults < checkpoint's config < overrides.

    A ``data`` override naming another data set drops the saved root and data options.
    Returns None when neither the checkpoint nor the overrides name a data set.
    """
    saved = {k: v for k, v in (saved or {}).items() if k in DATA_KEYS}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not saved.get("data") and not flags.get("data"):
        return None
    if flags.get("data") and flags["data"] != saved.get("data"):
        saved = {k: v for k, v in saved.items() if k not in ("data_root", "data_kwargs", "task")}
    cfg = config_io.merge(config_io.packaged_config("train"), saved, where="checkpoint config")
    cfg = config_io.merge(cfg, flags, where="command line")
    if "task" not in flags and "task" not in saved:
        cfg["task"] = "auto"
    config_io.infer_auto(cfg)
    return cfg


def _score(model, cfg, name: str) -> float | None:
    if cfg is None:
        return None
    val = build.make_dataset(cfg, cfg["val_split"])
    return validation_score(build.check_mode(model, name, cfg["mode"]), cfg, val)[0]


def compress_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    sample: torch.Tensor,
    budget: Budget,
    kind: str = "auto",
    *,
    data: dict | None = None,
    settings: DistillSettings | None = None,
    pointwise: bool = False,
    block_width: bool = False,
    latency=None,
    errors=None,
    best_effort: bool = False,
    progress=None,
) -> tuple[CompressReport, dict | None]:
    """Compress a checkpoint's model (optionally distil), score every stage, write ``dst``.

    Args:
        src: trained checkpoint.
        dst: compressed checkpoint to write (``load_model`` / evaluate / predict read it).
        sample: a batch at the size the model will run (timing, MACs, shapes).
        budget: the budget.
        kind: ``cp``, ``tucker`` or ``auto``.
        data: data-config overrides (``data``, ``data_root``, ``data_kwargs``, ...); with the
            checkpoint's own config they give the validation set and the fine-tune data.
        settings: distillation settings (``epochs=0``: no fine-tune).
        pointwise: consider 1x1 convs too.
        block_width: narrow the hidden width (the block's CP rank) of inverted-residual
            blocks (recorded as kind ``"width"``; their inner 1x1 convs are not factorized).
        best_effort: a latency budget that cannot be met keeps the fastest choice, warns and
            goes on (fine-tune, write); without it :class:`hoconv.compress.BudgetNotMet` is
            raised before the fine-tune and nothing is written.
        progress: optional callable given one line per stage (search, rounds, scoring).

    Returns:
        ``(report, history)``; ``history`` is the fine-tune's per-epoch scores (None without).
    """
    from hoconv.app.engine.checkpoint import digest, load_model, make_checkpoint, write_checkpoint

    settings = settings or DistillSettings()
    teacher, meta = load_model(src)
    if meta["model"].get("factorized"):
        raise ValueError(f"checkpoint {src} is already compressed; compress the original")
    cfg = data_config(meta.get("config"), data)
    if settings.epochs and cfg is None:
        raise ValueError("--finetune-epochs needs data: the checkpoint names none; pass --data")
    name = meta["model"]["name"]
    say = progress or (lambda line: None)
    new, factorized, report = compress_model(
        teacher, sample, budget, kind, latency, errors, pointwise, block_width,
        best_effort=best_effort, progress=say,
    )  # fmt: skip
    if cfg is not None:
        say("scoring the original and the compressed model on the validation split")
    report.whole["original"]["score"] = _score(teacher, cfg, name)
    report.whole["compressed"]["score"] = _score(new, cfg, name)
    history = None
    if settings.epochs:
        new, history = finetune(new, teacher, cfg, settings, name, progress=say)
        report.whole["finetuned"] = dict(
            report.whole["compressed"], score=max(h["score"] for h in history)
        )
    ckpt = make_checkpoint(model_spec=dict(meta["model"]), state_dict=new.state_dict(),
                           epoch=int(meta.get("epoch", 0)), config=dict(meta.get("config") or {}),
                           history=meta.get("history"), best=meta.get("best"))  # fmt: skip
    ckpt["model"]["factorized"] = factorized
    ckpt["digest"] = digest(ckpt)
    write_checkpoint(Path(dst), ckpt)
    return report, history
