"""Evaluate a checkpoint on a split: metrics.json, predictions.csv and the figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from hoconv.app.engine import build, tasks
from hoconv.app.engine import checkpoint as ckpt_io
from hoconv.app.engine import distributed as ddp
from hoconv.app.engine.predict import predict_dataset


def evaluate(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    overrides: dict | None = None,
    split: str = "test",
    plots_too: bool = True,
    per_video: bool = False,
) -> dict:
    """Evaluate ``checkpoint`` on ``split`` and write the results to ``out_dir``.

    The data set, mode and sizes default to the checkpoint's training config; ``overrides``
    (``data``, ``data_root``, ``data_kwargs``, ``mode``, ``batch_size``, ``device``,
    ``workers``) replace them. A 2-D model on ``mode: video`` runs frame by frame.
    Metrics pool every labelled frame; ``per_video`` adds the mean over videos, labelled.
    ``n`` counts the readable samples (rows) scored; ``skipped`` the unreadable ones left
    out (never replaced by another sample).

    Returns:
        The metrics (also written to ``out_dir/metrics.json``).
    """
    out_dir = Path(out_dir)
    info = ddp.setup((overrides or {}).get("device"))
    try:
        model, meta = ckpt_io.load_model(checkpoint, device=info.device)
        cfg = dict(meta["config"])
        for key, value in (overrides or {}).items():
            if key == "data_kwargs" and value:
                cfg[key] = {**cfg.get(key, {}), **value}
            elif value is not None:
                cfg[key] = value
        if (overrides or {}).get("data") and "data_root" not in (overrides or {}):
            cfg["data_root"] = None
        dataset = build.make_dataset(cfg, split)
        net = build.check_mode(model, meta["model"]["name"], cfg["mode"]).to(info.device)
        task = tasks.get(cfg["task"])
        stats: dict = {}
        preds = predict_dataset(
            net,
            dataset,
            task=task,
            batch_size=cfg["batch_size"],
            device=info.device,
            info=info,
            workers=cfg["workers"],
            stats=stats,
        )
        if not len(preds.get("index", ())):
            raise ValueError(
                f"evaluate: no readable sample in split {split!r} of {cfg['data']!r} "
                f"({stats['skipped']} unreadable; see the data report)"
            )
        figures = out_dir if info.is_main and plots_too else None
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
        metrics = task.evaluation(
            preds, model=model, dataset=dataset, out_dir=figures, per_video=per_video
        )
        metrics["skipped"] = stats["skipped"]  # unreadable samples left out of n
        if info.is_main:
            write_results(out_dir, metrics, preds)
        return metrics
    finally:
        ddp.cleanup(info)


def write_results(out: Path, metrics: dict, preds: dict) -> None:
    """metrics.json and predictions.csv (one row per scored sample or frame)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2))
    columns = [k for k in preds if np.asarray(preds[k]).ndim == 1]
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i in range(len(preds[columns[0]]) if columns else 0):
            writer.writerow([preds[k][i] for k in columns])


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, torch.Tensor)):
        return _json_safe(float(obj))
    return obj
