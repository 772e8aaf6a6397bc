"""What a task means for the loop: which rows a batch contributes, the loss, the metrics.

``affect``: outputs columns 0, 1 = valence, arousal, columns 2: = expression logits.
Static batches contribute one row per image; video batches one row per frame whose
``mask`` is True (padding and frames already covered by a previous window are left out),
so metrics count every labelled frame exactly once.
``classify``: one ``label`` per sample (image or clip), cross-entropy, top-1 / top-5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hoconv.engine.distributed import DistInfo, gather_with_grad

NUM_EXPRESSIONS = 8


def rows(task: str, batch: dict, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flatten a batch and the model outputs to per-row tensors.

    Args:
        task: ``"affect"`` or ``"classify"``.
        batch: a collated batch of the data set's dict samples.
        out: model outputs, (N, O) or per-frame (N, T, O).

    Returns:
        ``{"pred": (M, O), ...targets (M,)}`` on the outputs' device.
    """
    dev = out.device
    if task == "classify":
        if out.dim() == 3:  # per-frame logits of a clip model: average over time
            out = out.mean(dim=1)  # (N, O)
        return {"pred": out, "label": batch["label"].to(dev).long()}
    keys = ("valence", "arousal", "expression")
    if out.dim() == 3:  # (N, T, O) per-frame predictions of a clip
        mask = batch["mask"].to(dev).bool()  # (N, T)
        if mask.shape != out.shape[:2]:
            raise ValueError(
                f"model gives {tuple(out.shape[:2])} (clips, frames) but the batch mask is "
                f"{tuple(mask.shape)}; video models must output one row per input frame"
            )
        picked = {"pred": out[mask]}  # (M, O)
        for key in keys:
            if key in batch:
                picked[key] = batch[key].to(dev)[mask]  # (M,)
        return picked
    picked = {"pred": out}
    for key in keys:
        if key in batch:
            picked[key] = batch[key].to(dev).reshape(-1)  # (N,)
    return picked


def gather_rows(r: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Concatenate every rank's rows (differentiably for the predictions)."""
    return {k: gather_with_grad(v, info) for k, v in r.items()}


def loss(
    task: str, r: dict[str, torch.Tensor], affect_loss: torch.nn.Module | None
) -> torch.Tensor:
    """The task's training loss on (gathered) rows."""
    if task == "classify":
        return F.cross_entropy(r["pred"], r["label"], ignore_index=-1)
    targets = {k: r[k] for k in ("valence", "arousal", "expression") if k in r}
    return affect_loss(r["pred"], targets)


def to_numpy(task: str, r: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Detach rows into float64 / int64 numpy arrays for metrics and reports."""
    pred = r["pred"].detach().float().cpu()
    if task == "classify":
        return {"logits": pred.double().numpy(), "label": r["label"].cpu().numpy()}
    out = {
        "valence": r["valence"].detach().double().cpu().numpy(),
        "arousal": r["arousal"].detach().double().cpu().numpy(),
        "pred_valence": pred[:, 0].double().numpy(),
        "pred_arousal": pred[:, 1].double().numpy(),
    }
    if "expression" in r:
        out["expression"] = r["expression"].cpu().long().numpy()
    if pred.shape[1] > 2:
        out["pred_expression"] = pred[:, 2:].argmax(dim=1).long().numpy()
    return out


def metrics(task: str, p: dict[str, np.ndarray], per_video: bool = False) -> dict:
    """Metrics of a whole evaluation set (gathered predictions, never batch averages).

    Affect: ``{"valence": {rmse, sagr, pcc, ccc}, "arousal": {...}, "expression":
    {"accuracy"} (when labels and logits exist), "n"}``, pooled over every row; with
    ``per_video`` also ``"per_video_mean"``: the unweighted mean over videos, labelled as such.
    Classify: ``{top1, top5, n}``.
    """
    if task == "classify":
        known = p["label"] >= 0  # e.g. an unlabelled test list
        logits, label = p["logits"][known], p["label"][known]
        n = int(label.shape[0])
        k = min(5, logits.shape[1]) if logits.ndim == 2 else 1
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        hit = top == label[:, None]
        return {
            "top1": float(hit[:, 0].mean()) if n else math.nan,
            "top5": float(hit.any(axis=1).mean()) if n else math.nan,
            "n": n,
            "unlabelled": int((~known).sum()),
        }
    from hoconv.affect import metrics as am

    result: dict = {}
    for name in ("valence", "arousal"):
        y, yhat = p[name], p[f"pred_{name}"]
        result[name] = {
            "rmse": float(am.rmse(y, yhat)),
            "sagr": float(am.sagr(y, yhat)),
            "pcc": float(am.pcc(y, yhat)),
            "ccc": float(am.ccc(y, yhat)),
        }
    if "expression" in p and "pred_expression" in p:
        known = p["expression"] >= 0
        if known.any():
            acc = float((p["pred_expression"][known] == p["expression"][known]).mean())
            result["expression"] = {"accuracy": acc, "n": int(known.sum())}
    result["n"] = int(p["valence"].shape[0])
    if per_video and "video" in p:
        report = am.regression_report(
            np.stack([p["valence"], p["arousal"]], axis=1),  # (N, 2)
            np.stack([p["pred_valence"], p["pred_arousal"]], axis=1),  # (N, 2)
            sequences=[str(v) for v in p["video"]],
            per_sequence=True,
        )
        result["per_video_mean"] = {
            name: {
                k[: -len("_seq_mean")]: v
                for k, v in report[name].items()
                if k.endswith("_seq_mean")
            }
            for name in ("valence", "arousal")
        }
        result["per_video_mean"]["videos"] = report["valence"]["num_sequences"]
    return result


def score(task: str, m: dict) -> float:
    """One number to pick the best epoch / trial: mean V/A CCC, or top-1 accuracy."""
    value = m["top1"] if task == "classify" else (m["valence"]["ccc"] + m["arousal"]["ccc"]) / 2
    return float(value) if value == value else -math.inf  # NaN ranks last


def summary_line(task: str, m: dict) -> str:
    """Short human-readable form of the metrics."""
    count = f"n={m['n']}" + (f", {m['skipped']} unreadable skipped" if m.get("skipped") else "")
    if task == "classify":
        return f"top1 {m['top1']:.3f} top5 {m['top5']:.3f} ({count})"
    v, a = m["valence"], m["arousal"]
    return (
        f"valence CCC {v['ccc']:.3f} RMSE {v['rmse']:.3f} | "
        f"arousal CCC {a['ccc']:.3f} RMSE {a['rmse']:.3f} ({count})"
    )
