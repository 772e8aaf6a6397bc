"""What a task means for the loop: one :class:`Task` object per task owns the rows a batch
contributes, the loss, the metrics, the score and the labels.

``affect`` (:class:`AffectTask`): outputs columns 0, 1 = valence, arousal, columns 2: =
expression logits (:data:`hoconv.app.affect.labels.EXPRESSIONS`). Static batches contribute one
row per image; video batches one row per frame whose ``mask`` is True (padding and frames
already covered by a previous window are left out), so metrics count every labelled frame
exactly once.
``classify`` (:class:`ClassifyTask`): one ``label`` per sample (image or clip),
cross-entropy, top-1 / top-5 (:mod:`hoconv.app.classification`).

The trainer (loss, training-time validation) and ``evaluate`` both go through
:func:`get`, so validation during training and evaluation afterwards compute the same
numbers the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hoconv.app.affect.labels import EXPRESSIONS, NUM_EXPRESSIONS
from hoconv.app.engine.distributed import DistInfo, gather_with_grad

__all__ = ["EXPRESSIONS", "NUM_EXPRESSIONS", "AffectTask", "ClassifyTask", "Task", "get"]


def gather_rows(r: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Concatenate every rank's rows (differentiably for the predictions)."""
    return {k: gather_with_grad(v, info) for k, v in r.items()}


def _count(m: dict) -> str:
    return f"n={m['n']}" + (f", {m['skipped']} unreadable skipped" if m.get("skipped") else "")


class Task:
    """The behaviour of one task; subclasses implement every method."""

    name: str
    progress_metric: str  # the validation number shown beside the progress bar

    def rows(self, batch: dict, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flatten a batch and the model outputs ((N, O) or per-frame (N, T, O)) to rows:
        ``{"pred": (M, O), ...targets (M,)}`` on the outputs' device."""
        raise NotImplementedError

    def loss(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss on (gathered) rows."""
        raise NotImplementedError

    def to_numpy(self, rows: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Detach rows into float64 / int64 numpy arrays for metrics and reports."""
        raise NotImplementedError

    def metrics(self, preds: dict[str, np.ndarray], per_video: bool = False) -> dict:
        """Metrics of a whole evaluation set (gathered predictions, never batch averages)."""
        raise NotImplementedError

    def score(self, m: dict) -> float:
        """One number to pick the best epoch / trial (NaN ranks last)."""
        raise NotImplementedError

    def summary_line(self, m: dict) -> str:
        """Short human-readable form of the metrics."""
        raise NotImplementedError

    def evaluation(self, preds: dict, *, model: nn.Module, dataset, out_dir: Path | None,
                   per_video: bool = False) -> dict:  # fmt: skip
        """What ``hoconv evaluate`` reports (the metrics, plus task-specific extras; figures
        written to ``out_dir`` when given)."""
        return self.metrics(preds, per_video=per_video)

    def num_outputs(self, dataset) -> int:
        """Outputs a fresh model needs for ``dataset``."""
        raise NotImplementedError


class AffectTask(Task):
    """Valence / arousal regression (+ expression classification when labelled).

    Args:
        loss_fn: the training loss module (``hoconv.app.affect.losses.AffectLoss``); needed by
            :meth:`loss` only.
    """

    name, progress_metric = "affect", "val_ccc"
    labels = EXPRESSIONS
    _targets = ("valence", "arousal", "expression")

    def __init__(self, loss_fn: nn.Module | None = None) -> None:
        self.loss_fn = loss_fn

    def rows(self, batch: dict, out: torch.Tensor) -> dict[str, torch.Tensor]:
        dev = out.device
        if out.dim() == 3:  # (N, T, O) per-frame predictions of a clip
            mask = batch["mask"].to(dev).bool()  # (N, T)
            if mask.shape != out.shape[:2]:
                raise ValueError(
                    f"model gives {tuple(out.shape[:2])} (clips, frames) but the batch mask is "
                    f"{tuple(mask.shape)}; video models must output one row per input frame"
                )
            picked = {"pred": out[mask]}  # (M, O)
            for key in self._targets:
                if key in batch:
                    picked[key] = batch[key].to(dev)[mask]  # (M,)
            return picked
        picked = {"pred": out}
        for key in self._targets:
            if key in batch:
                picked[key] = batch[key].to(dev).reshape(-1)  # (N,)
        return picked

    def loss(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.loss_fn is None:
            raise ValueError("AffectTask.loss needs the task built with a loss_fn")
        return self.loss_fn(rows["pred"], {k: rows[k] for k in self._targets if k in rows})

    def to_numpy(self, rows: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        pred = rows["pred"].detach().float().cpu()
        out = {
            "valence": rows["valence"].detach().double().cpu().numpy(),
            "arousal": rows["arousal"].detach().double().cpu().numpy(),
            "pred_valence": pred[:, 0].double().numpy(),
            "pred_arousal": pred[:, 1].double().numpy(),
        }
        if "expression" in rows:
            out["expression"] = rows["expression"].cpu().long().numpy()
        if pred.shape[1] > 2:
            out["pred_expression"] = pred[:, 2:].argmax(dim=1).long().numpy()
        return out

    def metrics(self, preds: dict[str, np.ndarray], per_video: bool = False) -> dict:
        """``{"valence": {rmse, sagr, pcc, ccc}, "arousal": {...}, "expression":
        {"accuracy", "n"} (when labels and logits exist), "n"}`` pooled over every row; with
        ``per_video`` also ``"per_video_mean"``: the unweighted mean over videos, labelled."""
        from hoconv.app.affect import metrics as am

        result: dict = {}
        for name in ("valence", "arousal"):
            y, yhat = preds[name], preds[f"pred_{name}"]
            result[name] = {
                "rmse": float(am.rmse(y, yhat)),
                "sagr": float(am.sagr(y, yhat)),
                "pcc": float(am.pcc(y, yhat)),
                "ccc": float(am.ccc(y, yhat)),
            }
        if "expression" in preds and "pred_expression" in preds:
            known = preds["expression"] >= 0
            if known.any():
                hit = preds["pred_expression"][known] == preds["expression"][known]
                result["expression"] = {"accuracy": float(hit.mean()), "n": int(known.sum())}
        result["n"] = int(preds["valence"].shape[0])
        if per_video and "video" in preds:
            result["per_video_mean"] = _per_video_mean(preds)
        return result

    def evaluation(self, preds: dict, *, model: nn.Module, dataset, out_dir: Path | None,
                   per_video: bool = False) -> dict:  # fmt: skip
        """The metrics; figures ``va_over_time.png`` (per video, the paper's figure 8) and
        ``circumplex.png`` in ``out_dir`` when given."""
        if out_dir is not None:
            from hoconv.app.engine import plots

            plots.plot_over_time(preds, Path(out_dir) / "va_over_time.png")
            plots.plot_circumplex(preds, Path(out_dir) / "circumplex.png")
        return self.metrics(preds, per_video=per_video)

    def score(self, m: dict) -> float:
        value = (m["valence"]["ccc"] + m["arousal"]["ccc"]) / 2
        return float(value) if value == value else -math.inf

    def summary_line(self, m: dict) -> str:
        v, a = m["valence"], m["arousal"]
        return (
            f"valence CCC {v['ccc']:.3f} RMSE {v['rmse']:.3f} | "
            f"arousal CCC {a['ccc']:.3f} RMSE {a['rmse']:.3f} ({_count(m)})"
        )

    def num_outputs(self, dataset) -> int:
        """2 (V/A) + the expression classes when the data set has expression labels."""
        count = getattr(dataset, "num_expressions", None)
        if count is None:
            sample = next((s for s in map(dataset.__getitem__, range(len(dataset))) if s), None)
            if sample is None:
                raise ValueError(
                    f"no readable sample in the training split (all {len(dataset)} "
                    "unreadable; see the data report)"
                )
            labelled = int(torch.as_tensor(sample.get("expression", -1)).max()) >= 0
            count = NUM_EXPRESSIONS if labelled else 0
        return 2 + int(count)


def _per_video_mean(preds: dict[str, np.ndarray]) -> dict:
    from hoconv.app.affect import metrics as am

    report = am.regression_report(
        np.stack([preds["valence"], preds["arousal"]], axis=1),  # (N, 2)
        np.stack([preds["pred_valence"], preds["pred_arousal"]], axis=1),  # (N, 2)
        sequences=[str(v) for v in preds["video"]],
        per_sequence=True,
    )
    out = {
        name: {
            k[: -len("_seq_mean")]: v for k, v in report[name].items() if k.endswith("_seq_mean")
        }
        for name in ("valence", "arousal")
    }
    out["videos"] = report["valence"]["num_sequences"]
    return out


class ClassifyTask(Task):
    """One class per sample (image or clip); unlabelled samples (label -1) are counted apart."""

    name, progress_metric = "classify", "val_top1"

    def rows(self, batch: dict, out: torch.Tensor) -> dict[str, torch.Tensor]:
        from hoconv.app.classification import clip_logits

        return {"pred": clip_logits(out), "label": batch["label"].to(out.device).long()}

    def loss(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(rows["pred"], rows["label"], ignore_index=-1)

    def to_numpy(self, rows: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        logits = rows["pred"].detach().float().cpu().double().numpy()
        return {"logits": logits, "label": rows["label"].cpu().numpy()}

    def metrics(self, preds: dict[str, np.ndarray], per_video: bool = False) -> dict:
        """``{top1, top5, n, unlabelled}`` (n: labelled samples)."""
        from hoconv.app.classification import topk_accuracy

        known = preds["label"] >= 0  # e.g. an unlabelled test list
        logits = torch.as_tensor(preds["logits"][known])
        out = topk_accuracy(logits, torch.as_tensor(preds["label"][known]), (1, 5))
        return {**out, "n": int(known.sum()), "unlabelled": int((~known).sum())}

    def score(self, m: dict) -> float:
        return float(m["top1"]) if m["top1"] == m["top1"] else -math.inf

    def summary_line(self, m: dict) -> str:
        return f"top1 {m['top1']:.3f} top5 {m['top5']:.3f} ({_count(m)})"

    def evaluation(self, preds: dict, *, model: nn.Module, dataset, out_dir: Path | None,
                   per_video: bool = False) -> dict:  # fmt: skip
        """The metrics plus the confusion matrix and the (conv) parameter counts."""
        from hoconv.app.classification import classification_results

        return classification_results(preds["logits"], preds["label"], model=model,
                                      class_names=getattr(dataset, "class_names", None),
                                      out_dir=out_dir)  # fmt: skip

    def num_outputs(self, dataset) -> int:
        classes = getattr(dataset, "num_classes", None)
        if not classes:
            raise ValueError("num_outputs: the data set does not say its number of classes; set it")
        return int(classes)


def get(name: str, cfg: dict | None = None) -> Task:
    """The :class:`Task` called ``name``; with a run's ``cfg`` it holds its training loss."""
    if name == "affect":
        from hoconv.app.engine.build import make_affect_loss

        return AffectTask(make_affect_loss(cfg) if cfg is not None else None)
    if name == "classify":
        return ClassifyTask()
    raise ValueError(f"task must be 'affect' or 'classify', got {name!r}")
