"""Classification (CIFAR-10, Jester): loss, gathered top-k accuracy, confusion matrix, counts.

* :func:`classification_loss` - cross-entropy on ``(N, K)`` logits or per-frame ``(N, T, K)``
  logits (averaged over time first, as a clip-level prediction).
* :class:`ClassificationAccumulator` - collects the top-k predictions of a whole evaluation
  set, gathers them from every ``torch.distributed`` rank and computes ``top1``, ``top5``,
  ``n`` and the confusion matrix on the gathered set (never an average of batch or rank
  accuracies); samples seen twice (the padding ``DistributedSampler`` adds) are dropped
  when their index is given.
* :func:`confusion_matrix`, :func:`plot_confusion_matrix` (PNG).
* :func:`conv_parameter_count` - parameters of the convolutional layers only, the "#conv
  parameters" column of the paper's table 7.
* :func:`seed_summary` - mean and standard deviation of ``metrics.json`` files over seeds
  (``python -m hoconv.app.classification RUN*/eval/metrics.json``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def clip_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` logits as they are; per-frame ``(N, T, K)`` logits averaged over time."""
    if logits.dim() == 3:
        return logits.mean(dim=1)  # (N, K)
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K) or (N, T, K), got shape {tuple(logits.shape)}")
    return logits


def _check_labels(labels: torch.Tensor, n: int, k: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() != n:
        raise ValueError(f"labels has {labels.numel()} entries for {n} predictions")
    if labels.numel() and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k - 1}] (the model has {k} outputs)")
    return labels.long()


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of ``(N, K)`` or ``(N, T, K)`` logits against ``(N,)`` labels."""
    logits = clip_logits(logits)
    labels = _check_labels(labels, logits.shape[0], logits.shape[1]).to(logits.device)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def topk_predictions(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """int64 ``(N, min(k, K))`` class indices, best first."""
    logits = clip_logits(logits)
    return logits.topk(min(k, logits.shape[1]), dim=1).indices


def _topk_hits(top: torch.Tensor, labels: torch.Tensor, ks) -> dict[str, float]:
    """``{"top{k}": accuracy}`` from ``(M, width)`` best-first classes and ``(M,)`` labels."""
    hit = top == labels[:, None]  # (M, width)
    n = int(labels.numel())
    return {f"top{k}": float(hit[:, :k].any(1).double().mean()) if n else math.nan for k in ks}


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Top-k accuracies of ``(M, K)`` (or per-frame ``(M, T, K)``) logits; NaN when M = 0.

    ``k`` above the number of classes counts every class (top-5 of 3 classes is 1.0).
    """
    top = topk_predictions(logits, max(ks))  # (M, min(max k, K))
    return _topk_hits(top, torch.as_tensor(labels).reshape(-1).long(), ks)


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """int64 ``(K, K)`` counts; row = true class, column = predicted class."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions sizes differ: {y.size} vs {p.size}")
    for name, v in (("labels", y), ("predictions", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes - 1}]")
    return np.bincount(y * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


class ClassificationAccumulator:
    """Top-k predictions of an evaluation set, gathered across ranks.

    Args:
        num_classes: number of classes ``K``.
        topk: the ``k`` of the top-k accuracies (``top1`` is always reported).
    """

    def __init__(self, num_classes: int, topk: Sequence[int] = (1, 5)) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not topk or any(not isinstance(k, int) or k < 1 for k in topk):
            raise ValueError(f"topk must be positive integers, got {topk!r}")
        self.num_classes = num_classes
        self.topk = tuple(sorted(set(topk) | {1}))
        self.width = min(max(self.topk), num_classes)
        self.reset()

    def reset(self) -> None:
        """Forget everything collected."""
        self._rows: list[torch.Tensor] = []  # (M, 2 + width): index, label, top-k classes
        self.duplicates_removed = 0

    def update(self, logits: torch.Tensor, labels: Any, index: Any = None) -> None:
        """Add a batch: ``(N, K)`` / ``(N, T, K)`` logits, ``(N,)`` labels, ``(N,)`` sample ids."""
        logits = clip_logits(logits.detach())
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, expected {self.num_classes}")
        labels = _check_labels(labels, logits.shape[0], self.num_classes).cpu()
        n = logits.shape[0]
        ids = torch.full((n,), -1) if index is None else torch.as_tensor(index).reshape(-1)
        if ids.numel() != n:
            raise ValueError(f"index has {ids.numel()} entries for {n} predictions")
        top = topk_predictions(logits, self.width).cpu()  # (N, width)
        self._rows.append(torch.cat([ids.long()[:, None], labels[:, None], top], 1))

    def gather(self) -> torch.Tensor:
        """int64 ``(M, 2 + width)`` rows of every rank, in rank order."""
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, 2 + self.width).long()
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return rows
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows)  # ragged sizes, any backend
        return torch.cat(parts)

    def compute(self, gather: bool = True) -> dict[str, Any]:
        """``{"top1", "top5" (each k of topk), "n", "confusion"}`` on the gathered set.

        Args:
            gather: collect every rank's rows first; False when the rows already hold the
                whole set (e.g. predictions gathered by the caller).
        """
        rows = self.gather() if gather else torch.cat(self._rows) if self._rows else None
        if rows is None:
            rows = torch.zeros(0, 2 + self.width, dtype=torch.long)
        keep, seen = [], set()
        for i, idx in enumerate(rows[:, 0].tolist()):
            if idx >= 0 and idx in seen:
                continue
            seen.add(idx)
            keep.append(i)
        self.duplicates_removed = rows.shape[0] - len(keep)
        rows = rows[keep]
        labels, top = rows[:, 1], rows[:, 2:]
        out: dict[str, Any] = _topk_hits(top, labels, self.topk)
        out["n"] = int(labels.numel())
        out["confusion"] = confusion_matrix(labels, top[:, 0], self.num_classes)
        return out


def plot_confusion_matrix(
    matrix: np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "confusion matrix",
) -> Path:
    """Write the row-normalised confusion matrix (true class per row) as a PNG."""
    import matplotlib

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (K, K), got shape {matrix.shape}")
    k = matrix.shape[0]
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} names for {k} classes")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    with matplotlib.rc_context({"backend": "Agg"}):
        import matplotlib.pyplot as plt

        side = max(4.0, 0.35 * k + 2)
        fig, ax = plt.subplots(figsize=(side, side))
        im = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} (n={int(matrix.sum())})")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def classification_results(
    logits: Any,
    labels: Any,
    model: nn.Module | None = None,
    class_names: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a whole (gathered) evaluation set, as ``hoconv evaluate`` writes them.

    Args:
        logits: (M, K) scores of every sample.
        labels: (M,) classes; negative labels (e.g. Jester's unlabelled test list) are left
            out and counted in ``unlabelled``.
        model: when given, ``conv_params`` (:func:`conv_parameter_count`) and ``params``.
        class_names: names for the confusion matrix figure.
        out_dir: when given, ``confusion_matrix.png`` is written there.

    Returns:
        ``{"top1", "top5", "n", "unlabelled", "confusion_matrix" (K x K list), "conv_params",
        "params"}``.
    """
    scores = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    if scores.dim() != 2 or scores.shape[0] != y.numel():
        raise ValueError(
            f"logits must be (M, K) with M = {y.numel()} labels, got {tuple(scores.shape)}"
        )
    known = y >= 0
    acc = ClassificationAccumulator(max(2, scores.shape[1]))
    acc.update(scores[known], y[known])
    out = acc.compute(gather=False)  # the caller's arrays are already the whole set
    matrix = out.pop("confusion")
    out["unlabelled"] = int((~known).sum())
    out["confusion_matrix"] = matrix.tolist()
    if model is not None:
        out["conv_params"] = conv_parameter_count(model)
        out["params"] = sum(p.numel() for p in model.parameters())
    if out_dir is not None:
        plot_confusion_matrix(matrix, Path(out_dir) / "confusion_matrix.png", class_names)
    return out


def _is_conv(module: nn.Module) -> bool:
    from hoconv.layers import CPConv, TuckerConv

    return isinstance(module, (nn.modules.conv._ConvNd, CPConv, TuckerConv))


_NOT_CONV = (nn.modules.batchnorm._BatchNorm, nn.PReLU, nn.ReLU, nn.ELU)


def conv_parameter_count(model: nn.Module, include_bias: bool = True) -> int:
    """Parameters of the convolutional layers (dense, CP, Tucker): kernels or factors.

    Normalisation and activation parameters held inside a factorized layer (rank-space
    BatchNorm, PReLU of Algorithm 1) are not convolution parameters and are left out;
    the CP skip factor is counted.
    """
    total = 0
    for module in model.modules():
        if not _is_conv(module):
            continue
        skip = {id(p) for m in module.modules() if isinstance(m, _NOT_CONV) for p in m.parameters()}
        for name, p in module.named_parameters():
            if id(p) in skip or (not include_bias and name.split(".")[-1] == "bias"):
                continue
            total += p.numel()
    return total


def seed_summary(paths: Sequence[str | Path], keys: Sequence[str] = ("top1", "top5")) -> dict:
    """Mean, population std and values of ``keys`` over several ``metrics.json`` files."""
    if not paths:
        raise ValueError("seed_summary needs at least one metrics.json path")
    values: dict[str, list[float]] = {k: [] for k in keys}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"metrics file not found: {path}")
        data = json.loads(path.read_text())
        for k in keys:
            if k not in data:
                raise ValueError(f"{path} has no {k!r} (is it a classification metrics.json?)")
            values[k].append(float(data[k]))
    out = {"runs": len(paths)}
    for k, v in values.items():
        out[k] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hoconv.app.classification METRICS.json ...``: mean +- std over the runs."""
    paths = list(sys.argv[1:] if argv is None else argv)
    try:
        summary = seed_summary(paths)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
