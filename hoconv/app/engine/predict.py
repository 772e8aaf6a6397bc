"""Predict on a whole data set, gathered over every process, in data-set order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hoconv.app.data.base import SKIPPED_KEY, collate_counting
from hoconv.app.engine import tasks
from hoconv.app.engine.distributed import DistInfo, ShardSampler, gather_objects


class Indexed(Dataset):
    """Wrap a data set so each sample also carries its index (``"_index"``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        sample = self.dataset[i]
        if sample is None:  # unreadable: dropped by collate_counting, counted in the report
            return None
        sample = dict(sample)
        sample["_index"] = i
        return sample


def _ids(batch: dict, out: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row sample index, video id and frame index, matching ``Task.rows``."""
    index = batch["_index"].cpu().numpy()
    video = np.asarray(batch["video"], dtype=object) if "video" in batch else None
    if out.dim() == 3 and "mask" in batch:
        mask = batch["mask"].bool().cpu().numpy()  # (N, T)
        n, t = mask.shape
        frames = (
            batch["frames"].cpu().numpy() if "frames" in batch else np.tile(np.arange(t), (n, 1))
        )
        ids = {"index": np.repeat(index, t).reshape(n, t)[mask], "frame": frames[mask]}
        if video is not None:
            ids["video"] = np.repeat(video, t).reshape(n, t)[mask]
        return ids
    ids = {"index": index}
    if "frame" in batch:
        ids["frame"] = batch["frame"].cpu().numpy().reshape(-1)
    if video is not None:
        ids["video"] = video
    return ids


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    task: str | tasks.Task = "affect",
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    workers: int = 0,
    max_batches: int | None = None,
    stats: dict | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` over every sample of ``dataset`` and gather the rows of all processes.

    Each process predicts its own ``rank::world_size`` share (no sample twice, none
    dropped); the shares are gathered and sorted back to data-set order, so the result is
    the same for any number of processes.

    Args:
        model: the network (its train/eval mode is restored afterwards).
        dataset: a data set of dict samples (see ``hoconv.app.data``).
        task: ``"affect"`` / ``"classify"`` or its :class:`hoconv.app.engine.tasks.Task`.
        batch_size: samples per forward pass on each process.
        device: where to run.
        info: the process's place in a torchrun job (``None``: single process).
        workers: DataLoader worker processes.
        max_batches: stop after this many batches per process (quick checks only).
        stats: when given, ``stats["skipped"]`` is set to the number of unreadable samples
            (over every process) that were left out; they are never replaced.

    Returns:
        Arrays with one entry per row (image, or labelled frame of a clip):
        ``index``, ``video``, ``frame``, ``valence``, ``arousal``, ``pred_valence``,
        ``pred_arousal``, ``expression``, ``pred_expression`` (affect) or ``logits``,
        ``label`` (classify).
    """
    info = info or DistInfo(device=torch.device(device))
    task = tasks.get(task) if isinstance(task, str) else task
    sampler = ShardSampler(len(dataset), info, shuffle=False)
    loader = DataLoader(
        Indexed(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_counting,
    )
    was_training = model.training
    model.eval()
    parts: list[dict[str, np.ndarray]] = []
    skipped = 0
    try:
        for step, batch in enumerate(loader):
            if max_batches is not None and step >= max_batches:
                break
            skipped += batch.pop(SKIPPED_KEY)
            if "input" not in batch:  # every sample of this batch was unreadable
                continue
            out = model(batch["input"].to(device, non_blocking=True))
            part = task.to_numpy(task.rows(batch, out))
            part.update(_ids(batch, out))
            parts.append(part)
    finally:
        model.train(was_training)
    gathered = gather_objects((parts, skipped), info)
    if stats is not None:
        stats["skipped"] = sum(count for _, count in gathered)
    return _concat_sorted([p for rank_parts, _ in gathered for p in rank_parts])


def _concat_sorted(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    frame = cat.get("frame", np.zeros_like(cat["index"]))
    order = np.lexsort((frame, cat["index"]))  # by sample, then frame
    return {k: v[order] for k, v in cat.items()}
