"""Affect metrics on whole evaluation sets (section 5 of the paper), in float64.

All functions take ``(target, prediction)`` as tensors, arrays or sequences (flattened)
and use population moments (ddof = 0):

* ``rmse = sqrt(mean((y - yhat)^2))``
* ``sagr = mean(sign(y) == sign(yhat))`` (``numpy.sign``; 0 only matches 0)
* ``pcc = cov(y, yhat) / (std(y) std(yhat))``
* ``ccc = 2 cov(y, yhat) / (var(y) + var(yhat) + (mean(y) - mean(yhat))^2)``, the same as
  ``audmetric.concordance_cc``.

Degenerate inputs give these documented values with a :class:`DegenerateMetricWarning`
(never an exception):

* no samples: every metric is NaN;
* a NaN or infinite value in either input: every metric is NaN;
* zero variance in the target or the prediction (constant predictions, one sample):
  ``pcc = 0``; ``ccc`` follows its formula (e.g. 0 for constant predictions of a varying
  target) and is 1 when both are constant and equal (zero denominator, perfect agreement).

By default metrics pool all samples. :func:`regression_report` also gives the unweighted
mean over sequences (videos) as ``<metric>_seq_mean`` when ``per_sequence=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

METRICS = ("rmse", "sagr", "pcc", "ccc")
AXES = ("valence", "arousal")


class DegenerateMetricWarning(RuntimeWarning):
    """A metric was computed on degenerate input and took its documented fallback value."""


def _warn(message: str) -> None:
    warnings.warn(message, DegenerateMetricWarning, stacklevel=3)


def as_float64(x: Any, name: str) -> np.ndarray:
    """Flattened float64 numpy copy of a tensor / array / sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric (tensor, array or sequence): {err}") from None
    return arr.reshape(-1)


def _pair(target: Any, prediction: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Validated float64 pair, or None (with a warning) when the result must be NaN."""
    y, yhat = as_float64(target, "target"), as_float64(prediction, "prediction")
    if y.shape != yhat.shape:
        raise ValueError(f"target and prediction sizes differ: {y.size} vs {yhat.size}")
    if y.size == 0:
        _warn("metric on an empty set: returning NaN")
        return None
    if not (np.isfinite(y).all() and np.isfinite(yhat).all()):
        _warn("metric input contains NaN or inf: returning NaN")
        return None
    return y, yhat


def rmse(target: Any, prediction: Any) -> float:
    """Root mean square error."""
    pair = _pair(target, prediction)
    if pair is None:
        return float("nan")
    y, yhat = pair
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def sagr(target: Any, prediction: Any) -> float:
    """Sign agreement ratio."""
    pair = _pair(target, prediction)
    if pair is None:
        return float("nan")
    y, yhat = pair
    return float(np.mean(np.sign(y) == np.sign(yhat)))


def _moments(y: np.ndarray, yhat: np.ndarray) -> tuple[float, float, float, float]:
    """Population ``cov, var_y, var_yhat, mean_y - mean_yhat``; exactly 0 for constant inputs."""
    mu_y, mu_p = y.mean(), yhat.mean()
    dy = y - mu_y if np.ptp(y) > 0 else np.zeros_like(y)  # rounding must not fake variance
    dp = yhat - mu_p if np.ptp(yhat) > 0 else np.zeros_like(yhat)
    return (
        float(np.mean(dy * dp)),
        float(np.mean(dy * dy)),
        float(np.mean(dp * dp)),
        float(mu_y - mu_p),
    )


def pcc(target: Any, prediction: Any) -> float:
    """Pearson correlation coefficient (0 with a warning when a variance is zero)."""
    pair = _pair(target, prediction)
    if pair is None:
        return float("nan")
    cov, var_y, var_p, _ = _moments(*pair)
    if var_y == 0 or var_p == 0:
        _warn("pcc with zero variance (constant target or prediction): returning 0")
        return 0.0
    return float(cov / np.sqrt(var_y * var_p))


def ccc(target: Any, prediction: Any) -> float:
    """Lin's concordance correlation coefficient (population moments)."""
    pair = _pair(target, prediction)
    if pair is None:
        return float("nan")
    cov, var_y, var_p, diff = _moments(*pair)
    if var_y == 0 or var_p == 0:
        _warn("ccc with zero variance (constant target or prediction)")
    denominator = var_y + var_p + diff * diff
    if denominator == 0:
        return 1.0
    return float(2.0 * cov / denominator)


def accuracy(target: Any, prediction: Any, ignore_index: int = -1) -> float:
    """Classification accuracy over targets != ``ignore_index``.

    Args:
        target: (N,) class indices.
        prediction: (N,) class indices or (N, K) scores (argmax taken).
        ignore_index: target value to ignore.

    Returns:
        The fraction correct; NaN with a warning when no target is valid.
    """
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    p = (
        prediction
        if isinstance(prediction, torch.Tensor)
        else torch.as_tensor(np.asarray(prediction))
    )
    t = t.reshape(-1).long()
    if p.dim() >= 2 and p.shape[-1] > 1 and p.numel() != t.numel():
        p = p.reshape(-1, p.shape[-1]).argmax(-1)  # (N,)
    p = p.reshape(-1).long()
    if p.shape != t.shape:
        raise ValueError(f"target and prediction sizes differ: {t.numel()} vs {p.numel()}")
    valid = t != ignore_index
    if not bool(valid.any()):
        _warn("accuracy with no valid target: returning NaN")
        return float("nan")
    return float((p[valid] == t[valid]).double().mean())


def _metric_dict(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    return {"rmse": rmse(y, yhat), "sagr": sagr(y, yhat), "pcc": pcc(y, yhat), "ccc": ccc(y, yhat)}


def regression_report(
    targets: Any,
    preds: Any,
    sequences: Sequence[str] | None = None,
    per_sequence: bool = False,
) -> dict[str, dict[str, float]]:
    """RMSE / SAGR / PCC / CCC for valence and arousal.

    Args:
        targets: (N, 2) true (valence, arousal).
        preds: (N, >= 2) predictions; columns 0 and 1 are used.
        sequences: (N,) sequence (video) id per sample; needed for ``per_sequence``.
        per_sequence: also report the unweighted mean over sequences, as
            ``rmse_seq_mean`` etc., next to the pooled values.

    Returns:
        ``{"valence": {"rmse", "sagr", "pcc", "ccc", "n"[, "<metric>_seq_mean",
        "num_sequences"]}, "arousal": {...}}``; pooled values are over all N samples.
    """
    y = _as_matrix(targets, "targets")
    p = _as_matrix(preds, "preds")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"targets and preds have {y.shape[0]} vs {p.shape[0]} rows")
    if per_sequence and sequences is None:
        raise ValueError("per_sequence=True needs sequences (one id per sample)")
    if sequences is not None and len(sequences) != y.shape[0]:
        raise ValueError(f"sequences has {len(sequences)} ids for {y.shape[0]} samples")
    report: dict[str, dict[str, float]] = {}
    for j, axis in enumerate(AXES):
        entry = _metric_dict(y[:, j], p[:, j])
        entry["n"] = int(y.shape[0])
        if per_sequence:
            ids = np.asarray([str(s) for s in sequences])
            names = sorted(set(ids.tolist()))
            per = [_metric_dict(y[ids == s, j], p[ids == s, j]) for s in names]
            for m in METRICS:
                values = np.array([d[m] for d in per])
                entry[f"{m}_seq_mean"] = float(values.mean()) if len(values) else float("nan")
            entry["num_sequences"] = len(names)
        report[axis] = entry
    return report


def _as_matrix(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be (N, >= 2) with columns valence, arousal; got {arr.shape}")
    return arr
