"""The training loop: epochs of Adam steps, validation each epoch, safe checkpoints.

Determinism: every epoch reseeds torch / numpy / random from ``(seed, epoch)`` and the
sampler permutes with ``seed + epoch``, so an epoch's result depends only on the state at
its start. A run killed at any point resumes (``--resume``) from ``last.pt`` (written at
the end of each epoch) and reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hoconv.app.data.base import SKIPPED_KEY, collate_counting
from hoconv.app.engine import build, runlog, tasks
from hoconv.app.engine import checkpoint as ckpt_io
from hoconv.app.engine import config as config_io
from hoconv.app.engine import distributed as ddp
from hoconv.app.engine.predict import predict_dataset
from hoconv.app.engine.sync_bn import convert_batchnorm


class TrainingError(RuntimeError):
    """Training had to stop (e.g. a non-finite loss); the message says what is kept."""


def seed_all(seed: int) -> None:
    """Seed torch, numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def train(cfg: dict, out_dir: str | Path, *, resume: bool = False) -> dict:
    """Train (and validate every epoch) as ``cfg`` says; write checkpoints and logs to ``out_dir``.

    Args:
        cfg: a resolved config (see ``hoconv/app/configs/train.yaml``).
        out_dir: the run folder: ``config.yaml``, ``last.pt``, ``best.pt``, ``log.csv``,
            ``log.json``.
        resume: continue from ``out_dir/last.pt``.

    Returns:
        ``{"run_dir", "best", "last", "history", "params", "trainable_params", "wall_s"}``.

    Raises:
        TrainingError: the loss became NaN/inf (``last.pt`` keeps the last good epoch).
        ValueError, FileNotFoundError: bad config, data or checkpoint (one-line messages).
    """
    info = ddp.setup(cfg.get("device"))
    try:
        return _train(dict(cfg), Path(out_dir), resume, info)
    finally:
        ddp.cleanup(info)


def _train(cfg: dict, out: Path, resume: bool, info: ddp.DistInfo) -> dict:
    start = time.perf_counter()
    state = _open_run(cfg, out, resume, info)
    if state is None:
        cfg = build.inherit_data_settings(cfg)
    seed_all(cfg["seed"])
    train_ds = build.make_dataset(cfg, cfg["train_split"], training=True)
    val_ds = build.make_dataset(cfg, cfg["val_split"])
    core, spec, net = _prepare_model(cfg, state, info, train_ds)
    schedule = _lasso_setup(cfg, core, fresh=state is None)
    params = build.trainable_parameters(core)
    optimizer = build.make_optimizer(cfg, params)
    scheduler = build.make_scheduler(cfg, optimizer)
    task = tasks.get(cfg["task"], cfg)  # its loss, metrics and score
    first_epoch, history, best = 0, [], None
    if state:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        first_epoch, history, best = state["epoch"], state["history"], state["best"]
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config_io.save(cfg, out / "config.yaml")
        _tidy_run_folder(out, state, cfg)
    sizes = {"params": build.count(core), "trainable_params": build.count(params)}
    runlog.say(
        f"train {spec['name']} ({sizes['params']:,} params, {sizes['trainable_params']:,} trained) on "
        f"{cfg['data']} {cfg['mode']}: {len(train_ds)} train / {len(val_ds)} val samples, "
        f"{info.world_size} process(es) on {info.device}",
        info.is_main and cfg.get("progress", True),
    )
    per_rank = cfg["batch_size"] // info.world_size
    loader, sampler = _make_loader(train_ds, per_rank, cfg, info)
    for epoch in range(first_epoch, cfg["epochs"]):
        seed_all(cfg["seed"] * 100_003 + epoch)
        sampler.set_epoch(epoch)
        build.seed_epoch(train_ds, cfg["seed"], epoch)
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        counts = _train_epoch(
            net, core, loader, optimizer, task, cfg, info, epoch, out, history, schedule
        )
        metrics = _validate(net, val_ds, task, cfg, per_rank, info, epoch)
        value = task.score(metrics)
        _step_scheduler(scheduler, value)
        row = {"epoch": epoch + 1, "lr": lr, **counts, "score": value}
        row.update(runlog.flatten_metrics(metrics), epoch_s=round(time.perf_counter() - t0, 3))
        _lasso_epoch_end(schedule, core, value, cfg, row, out if info.is_main else None)
        history.append(row)
        improved = best is None or value > best["score"]
        if improved:
            best = {"epoch": epoch + 1, "score": value, "metrics": metrics}
        if info.is_main:
            _save_epoch(out, spec, core, cfg, optimizer, scheduler, history, best, improved)
            runlog.say(
                f"epoch {epoch + 1}/{cfg['epochs']} loss {counts['train_loss']:.4f} | val "
                f"{task.summary_line(metrics)}{' *' if improved else ''}",
                cfg.get("progress", True),
            )
        ddp.barrier(info)
    return {
        "run_dir": str(out),
        "best": best,
        "last": history[-1] if history else None,
        "history": history,
        **sizes,
        "wall_s": time.perf_counter() - start,
    }


RUN_FILES = ("config.yaml", "last.pt", "best.pt", "log.csv", "log.json")


def _open_run(cfg: dict, out: Path, resume: bool, info: ddp.DistInfo) -> dict | None:
    """Check ``out`` and the batch size; the state of ``last.pt`` on resume, else None."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a run folder (new, empty or a run's)")
    last_path = out / "last.pt"
    state = _resume_state(last_path) if resume else None
    if state is None and last_path.exists():
        raise ValueError(
            f"--out: {out} already holds a run (last.pt); use --resume or another folder"
        )
    if state is None and out.is_dir() and any(out.iterdir()):
        if not any((out / name).exists() for name in RUN_FILES):
            raise ValueError(
                f"--out: {out} holds other files and is not a hoconv run folder; "
                "pass a new or empty folder"
            )
    if cfg["batch_size"] % info.world_size:
        raise ValueError(
            f"--batch-size {cfg['batch_size']} (global) is not divisible by {info.world_size} processes"
        )
    return state


def _validate(net, val_ds, task, cfg: dict, per_rank: int, info, epoch: int) -> dict:
    """Metrics of the whole validation split; ``"skipped"``: its unreadable samples."""
    stats: dict = {}
    preds = predict_dataset(
        net,
        val_ds,
        task=task,
        batch_size=per_rank,
        device=info.device,
        info=info,
        workers=cfg["workers"],
        stats=stats,
    )
    metrics = task.metrics(preds) if len(preds.get("index", ())) else {"n": 0}
    if not metrics["n"]:
        raise TrainingError(
            f"epoch {epoch + 1}: no readable labelled sample in validation split "
            f"{cfg['val_split']!r} ({stats['skipped']} unreadable; see the data report); "
            "nothing to score the epoch on"
        )
    return {**metrics, "skipped": stats["skipped"]}


def _step_scheduler(scheduler, value: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(value)
    elif scheduler is not None:
        scheduler.step()


def _lasso_setup(cfg: dict, core: nn.Module, fresh: bool):
    """Normalise the factors for a lasso run (exact); the ``--lasso auto`` schedule or None."""
    if not cfg.get("lasso"):
        return None
    from hoconv.pruning import normalize_factors

    if fresh:  # exact: a component's weight / core-slice norm is then its magnitude
        normalize_factors(core)
    if cfg["lasso"] != "auto":
        return None
    from hoconv.lasso_schedule import AutoLasso

    settings = {k: cfg[f"lasso_{k}"] for k in ("target", "tolerance", "start", "doubling_steps")}
    settings["delay_epochs"] = cfg.get("lasso_delay", 0)
    saved = None if fresh else cfg.get("lasso_auto")  # resumed: the schedule where it was
    return AutoLasso(**(saved or settings)).resume(core)


def _lasso_epoch_end(schedule, core, score: float, cfg: dict, row: dict, out: Path | None):
    """Feed the validation score to ``--lasso auto``; record its state in the row and config."""
    if schedule is None:
        return
    schedule.end_epoch(core, score)
    cfg["lasso_auto"] = schedule.state()
    row.update(lasso_gamma=schedule.gamma, zero_share=round(schedule.zero_share, 4))
    if out is not None:
        config_io.save(cfg, out / "config.yaml")


def _prepare_model(cfg: dict, state: dict | None, info: ddp.DistInfo, train_ds) -> tuple:
    """Build (or rebuild on resume) the model, set the phase, move it, wrap it for DDP.

    Returns:
        ``(core, spec, net)``: the bare model (checkpointed), its rebuildable spec, and the
        module the loop calls (frame-wise wrapper and/or DistributedDataParallel around core).
    """
    core, spec = build.make_model(cfg, train_ds, state["model"] if state else None)
    cfg["model"], cfg["model_kwargs"] = spec["name"], dict(spec["kwargs"])
    net = build.check_mode(core, spec["name"], cfg["mode"])
    if cfg.get("phase"):
        from hoconv.transduction import phase

        phase(core, cfg["phase"])
    if state:
        core.load_state_dict(state["state_dict"])
    net.to(info.device)
    if info.enabled:
        if info.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        else:  # SyncBatchNorm is CUDA-only: the same global statistics over gloo
            net = convert_batchnorm(net)
        net = DistributedDataParallel(
            net, device_ids=[info.device] if info.device.type == "cuda" else None
        )
    return core, spec, net


def _make_loader(train_ds, per_rank: int, cfg: dict, info: ddp.DistInfo) -> tuple:
    """The training DataLoader over this rank's shard, and its epoch-aware sampler."""
    sampler = ddp.ShardSampler(len(train_ds), info, shuffle=True, seed=cfg["seed"])
    loader = DataLoader(
        train_ds,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg["workers"],
        drop_last=len(sampler) >= per_rank,
        pin_memory=info.device.type == "cuda",
        collate_fn=collate_counting,
    )
    return loader, sampler


def _save_epoch(out, spec, core, cfg, optimizer, scheduler, history, best, improved) -> None:
    """last.pt (always), best.pt (when improved), log.csv / log.json: rank 0 only."""
    ckpt = ckpt_io.make_checkpoint(
        model_spec=spec,
        state_dict=core.state_dict(),
        epoch=history[-1]["epoch"],
        config=cfg,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        history=history,
        best=best,
    )
    keep = cfg.get("keep", "both")  # best | last | both (--keep); resume needs last.pt
    if improved and keep in ("best", "both"):  # best.pt first: a crash between the writes
        ckpt_io.write_checkpoint(out / "best.pt", ckpt)  # never leaves last.pt naming a lost best
    if keep in ("last", "both"):
        ckpt_io.write_checkpoint(out / "last.pt", ckpt)
    runlog.write_history(out, history)


def _tidy_run_folder(out: Path, state: dict | None, cfg: dict) -> None:
    """Remove temp files a killed write left; on resume make best.pt match last.pt's best."""
    ckpt_io.remove_temp_files(out)
    if state is not None and cfg.get("keep", "both") in ("best", "both"):
        note = ckpt_io.restore_best(out, state)
        runlog.say(f"resume: {note}", note is not None)


def _resume_state(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"--resume: {path} does not exist (nothing to resume)")
    return ckpt_io.read_checkpoint(path)


def _warmup(optimizer, base_lrs: list[float], cfg: dict, done: int) -> None:
    """Linear warm-up: lr = base * (done + 1) / warmup_steps for the first steps of the run."""
    warm = int(cfg.get("warmup_steps") or 0)
    factor = min(1.0, (done + 1) / warm) if warm else 1.0
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


def _train_epoch(
    net, core, loader, optimizer, task, cfg, info, epoch, out, history, schedule=None
) -> dict:
    """One pass over the training split (``schedule``: the ``--lasso auto`` one, or None).

    Returns:
        ``{"train_loss": mean loss of the steps, "train_steps", "train_samples": rows
        trained on (images, or labelled frames of clips, over every process),
        "train_skipped": unreadable samples left out}``.

    Raises:
        TrainingError: a non-finite loss, or no step at all (nothing readable).
    """
    net.train()
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    done = sum(row.get("train_steps", 0) for row in history)  # optimizer steps of earlier epochs
    limit = cfg.get("max_train_batches") or len(loader)
    total, steps, samples, skipped = 0.0, 0, 0, 0
    last = f"{history[-1]['score']:.3f}" if history else "-"
    with runlog.progress(
        min(limit, len(loader)),
        f"epoch {epoch + 1}/{cfg['epochs']}",
        info.is_main and cfg.get("progress", True),
    ) as bar:
        for step, batch in enumerate(loader):
            if step >= limit:
                break
            skipped += batch.pop(SKIPPED_KEY)
            if "input" not in batch:  # every sample unreadable (counted in the data report)
                if info.world_size > 1:
                    raise TrainingError("a whole batch on one rank was unreadable; see the report")
                continue
            _warmup(optimizer, base_lrs, cfg, done + steps)
            value, rows = _step(net, core, batch, optimizer, task, cfg, info, schedule)
            if rows == 0:
                continue
            if not ddp.all_true(math.isfinite(value), info):
                kept = (
                    f"last good checkpoint: {out / 'last.pt'} (epoch {epoch})"
                    if (out / "last.pt").exists()
                    else "no checkpoint was written yet"
                )
                raise TrainingError(
                    f"non-finite training loss ({value}) at epoch {epoch + 1} step {step + 1}; "
                    f"stopped. {kept}. Try a lower --lr"
                )
            total, steps, samples = total + value, steps + 1, samples + rows
            bar.set_postfix({"loss": f"{total / steps:.4f}", task.progress_metric: last})
            bar.update(1)
    _warmup(optimizer, base_lrs, {}, 0)  # restore: the scheduler steps from the base lr
    skipped = sum(ddp.gather_objects(skipped, info))
    if steps == 0:
        raise TrainingError(
            f"epoch {epoch + 1}: no training step ran: no readable labelled sample in split "
            f"{cfg['train_split']!r} ({skipped} unreadable; see the data report)"
        )
    return {
        "train_loss": total / steps,
        "train_steps": steps,
        "train_samples": samples,
        "train_skipped": skipped,
    }


def _step(net, core, batch, optimizer, task, cfg, info, schedule=None) -> tuple[float, int]:
    """Forward, loss and (when finite) one optimizer step on a batch gathered over ranks.

    Returns:
        ``(loss value, rows in the global batch)``; no step when there are no rows or the
        loss is not finite (the caller stops the run).
    """
    lasso = 0.0 if schedule is not None else float(cfg.get("lasso") or 0.0)
    proximal = bool(cfg.get("proximal")) and lasso > 0  # soft-threshold after the step
    out_t = net(batch["input"].to(info.device, non_blocking=True))
    rows = tasks.gather_rows(task.rows(batch, out_t), info)
    if rows["pred"].shape[0] == 0:
        return 0.0, 0
    loss = task.loss(rows)
    if lasso and not proximal:
        from hoconv.pruning import lasso_penalty

        loss = loss + lasso * lasso_penalty(core)
    value = float(loss.detach())
    if not ddp.all_true(math.isfinite(value), info):
        return value, int(rows["pred"].shape[0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if proximal:
        from hoconv.pruning import optimizer_proximal_step

        optimizer_proximal_step(core, optimizer, lasso)
    elif schedule is not None:  # --lasso auto
        schedule.after_step(core, optimizer)
    return value, int(rows["pred"].shape[0])
