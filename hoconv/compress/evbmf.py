"""Empirical variational Bayesian matrix factorization (EVBMF) rank, and per-layer Tucker ranks.

The global analytic solution of fully-observed VB matrix factorization with the noise variance
estimated too (Nakajima, Sugiyama, Babacan, Tomioka, "Global analytic solution of
fully-observed variational Bayesian matrix factorization", JMLR 14, 2013): for an ``L x M``
matrix (``L <= M``, ``alpha = L / M``) with singular values ``gamma_h``, with
``x_h = gamma_h^2 / (M sigma^2)`` the free energy is ``sum_h psi(x_h)`` (up to constants),

    psi(x) = x - log x + [x > x_bar] (log(tau(x) + 1) + alpha log(tau(x) / alpha + 1) - tau(x)),
    tau(x) = (x - 1 - alpha + sqrt((x - 1 - alpha)^2 - 4 alpha)) / 2,
    x_bar = (1 + tau_bar)(1 + alpha / tau_bar),  tau_bar = 2.5129 sqrt(alpha),

minimised over ``sigma^2`` between the paper's bounds; the rank is the number of components with
``x_h > x_bar``. As in musco, it is applied to a conv kernel's output- and input-channel
unfoldings to give Tucker-2 ranks (a CP rank: the larger of the two).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

TAU_BAR_FACTOR = 2.5129  # the paper's constant: tau_bar = 2.5129 sqrt(alpha)


def _free_energy(sigma2: float, s2: np.ndarray, m: int, alpha: float, x_bar: float) -> float:
    x = s2 / (m * sigma2)
    psi = x - np.log(x)
    big = x > x_bar
    xb = x[big]
    tau = 0.5 * (xb - (1 + alpha) + np.sqrt((xb - (1 + alpha)) ** 2 - 4 * alpha))
    psi[big] += np.log(tau + 1) + alpha * np.log(tau / alpha + 1) - tau
    return float(psi.sum())


def evbmf_rank(matrix: np.ndarray | torch.Tensor) -> tuple[int, float]:
    """EVBMF rank of ``matrix`` and the estimated noise variance ``sigma^2``."""
    v = np.asarray(matrix.detach().double().cpu() if torch.is_tensor(matrix) else matrix, float)
    if v.shape[0] > v.shape[1]:
        v = v.T
    l_dim, m_dim = v.shape  # L <= M
    alpha = l_dim / m_dim
    s = np.linalg.svd(v, compute_uv=False)
    s2 = s**2
    tau_bar = TAU_BAR_FACTOR * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_ub = int(min(math.ceil(l_dim / (1 + alpha)) - 1, l_dim - 1))  # upper bound of the rank
    lower = max(s2[h_ub] / (m_dim * x_bar), float(np.mean(s2[h_ub:])) / m_dim)
    upper = float(s2.sum()) / (l_dim * m_dim)
    if not upper > 0:
        return 0, 0.0
    if lower >= upper:
        sigma2 = upper
    else:
        res = minimize_scalar(
            _free_energy, bounds=(lower, upper), args=(s2, m_dim, alpha, x_bar), method="bounded"
        )
        sigma2 = float(res.x)
    rank = int(np.sum(s2 > m_dim * sigma2 * x_bar))
    return rank, sigma2


def tucker_ranks_evbmf(kernel: torch.Tensor) -> tuple[int, int]:
    """``(R_out, R_in)`` of a kernel ``(T, C, *K)``: EVBMF on its mode-0 and mode-1 unfoldings."""
    t, c = kernel.shape[:2]
    out_unfold = kernel.reshape(t, -1)  # (T, C*prod(K))
    in_unfold = kernel.transpose(0, 1).reshape(c, -1)  # (C, T*prod(K))
    return max(1, evbmf_rank(out_unfold)[0]), max(1, evbmf_rank(in_unfold)[0])


def cp_rank_evbmf(kernel: torch.Tensor) -> int:
    """A CP rank from the unfoldings' EVBMF ranks (the larger one)."""
    return max(tucker_ranks_evbmf(kernel))
