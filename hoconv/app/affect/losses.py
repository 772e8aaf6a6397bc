"""The paper's affect loss (section 5).

``L = (alpha L_RMSE + beta L_PCC + gamma L_CCC) / (alpha + beta + gamma)`` with
``L_RMSE = RMSE_v + RMSE_a``, ``L_PCC = 1 - (PCC_v + PCC_a) / 2``,
``L_CCC = 1 - (CCC_v + CCC_a) / 2`` over the (masked) batch with population moments, and
``alpha, beta, gamma ~ U[0, 1]`` drawn at every training call (shake-shake); in eval mode
(or with fixed ``weights``) the weights are fixed. A cross-entropy on the expression logits
(``ignore_index=-1``) is added when the prediction has them and the batch has valid
expression targets.

Stability: ``RMSE = sqrt(MSE + eps)``, ``PCC = cov / sqrt(var_y var_yhat + eps)``,
``CCC = 2 cov / (var_y + var_yhat + (mu_y - mu_yhat)^2 + eps)``, so a batch with zero
variance gives finite values and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def _moments(y: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
    mu_y, mu_p = y.mean(), p.mean()
    dy, dp = y - mu_y, p - mu_p
    return (dy * dp).mean(), (dy * dy).mean(), (dp * dp).mean(), mu_y - mu_p


def rmse_loss(y: torch.Tensor, p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``sqrt(mean((y - p)^2) + eps)``."""
    return torch.sqrt(((y - p) ** 2).mean() + eps)


def pcc_value(y: torch.Tensor, p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable Pearson correlation with ``eps`` in the denominator."""
    cov, var_y, var_p, _ = _moments(y, p)
    return cov / torch.sqrt(var_y * var_p + eps)


def ccc_value(y: torch.Tensor, p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable concordance correlation with ``eps`` in the denominator."""
    cov, var_y, var_p, diff = _moments(y, p)
    return 2 * cov / (var_y + var_p + diff * diff + eps)


class AffectLoss(nn.Module):
    """Shake-shake RMSE / PCC / CCC loss on valence and arousal (+ expression cross-entropy).

    Args:
        weights: ``"shake"`` (alpha, beta, gamma ~ U[0, 1] per training call; equal
            weights in eval mode) or three fixed non-negative numbers.
        expression_weight: factor of the cross-entropy term (0 disables it).
        eps: stabiliser (see the module docstring).
        generator: optional ``torch.Generator`` for the shake-shake draws.
        ignore_index: expression target meaning "missing".
    """

    def __init__(
        self,
        weights: str | tuple[float, float, float] = "shake",
        expression_weight: float = 1.0,
        eps: float = 1e-8,
        generator: torch.Generator | None = None,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        if isinstance(weights, str):
            if weights != "shake":
                raise ValueError(
                    f"weights must be 'shake' or (alpha, beta, gamma), got {weights!r}"
                )
        else:
            weights = tuple(float(w) for w in weights)
            if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(
                    f"fixed weights must be 3 non-negative numbers with a positive sum, got {weights}"
                )
        if expression_weight < 0 or eps <= 0:
            raise ValueError(
                f"need expression_weight >= 0 and eps > 0, got {expression_weight}, {eps}"
            )
        self.weights = weights
        self.expression_weight = float(expression_weight)
        self.eps = float(eps)
        self.generator = generator
        self.ignore_index = int(ignore_index)

    def _coefficients(self, dtype: torch.dtype) -> torch.Tensor:
        if self.weights == "shake":
            if self.training:
                return torch.rand(3, generator=self.generator, dtype=torch.float64).to(dtype)
            return torch.full((3,), 0.5, dtype=dtype)
        return torch.tensor(self.weights, dtype=dtype)

    def forward(
        self,
        prediction: torch.Tensor,
        batch: Mapping[str, torch.Tensor],
        return_terms: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch.

        Args:
            prediction: (N, D) or (N, T, D); columns 0, 1 = valence, arousal; 2: = logits.
            batch: ``valence``, ``arousal`` ((N,) or (N, T)), optional ``expression`` and
                ``mask`` (True = counted).
            return_terms: also return the detached terms as floats.
        """
        if prediction.dim() not in (2, 3) or prediction.shape[-1] < 2:
            raise ValueError(
                f"prediction must be (N, D) or (N, T, D) with D >= 2, got {tuple(prediction.shape)}"
            )
        lead = prediction.shape[:-1]
        mask = batch.get("mask")
        mask = (
            torch.ones(lead, dtype=torch.bool, device=prediction.device)
            if mask is None
            else mask.reshape(lead).bool()
        )
        flat = prediction[mask]  # (M, D)
        zero = prediction.sum() * 0.0
        if flat.shape[0] == 0:
            return (zero, {"total": 0.0}) if return_terms else zero
        y_v = batch["valence"].reshape(lead)[mask].to(prediction.dtype)
        y_a = batch["arousal"].reshape(lead)[mask].to(prediction.dtype)
        p_v, p_a = flat[:, 0], flat[:, 1]
        l_rmse = rmse_loss(y_v, p_v, self.eps) + rmse_loss(y_a, p_a, self.eps)
        l_pcc = 1 - (pcc_value(y_v, p_v, self.eps) + pcc_value(y_a, p_a, self.eps)) / 2
        l_ccc = 1 - (ccc_value(y_v, p_v, self.eps) + ccc_value(y_a, p_a, self.eps)) / 2
        coef = self._coefficients(prediction.dtype).to(prediction.device)
        total = (coef[0] * l_rmse + coef[1] * l_pcc + coef[2] * l_ccc) / coef.sum().clamp_min(1e-6)
        terms = {"rmse": l_rmse, "pcc": l_pcc, "ccc": l_ccc}
        expr = batch.get("expression")
        if self.expression_weight > 0 and expr is not None and prediction.shape[-1] > 2:
            target = expr.reshape(lead)[mask].long()
            if bool((target != self.ignore_index).any()):
                ce = F.cross_entropy(flat[:, 2:], target, ignore_index=self.ignore_index)
                total = total + self.expression_weight * ce
                terms["ce"] = ce
        if not return_terms:
            return total
        terms["total"] = total
        return total, {k: float(v.detach()) for k, v in terms.items()}
