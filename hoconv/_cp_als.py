"""CP-ALS with a Khatri-Rao-free MTTKRP, for kernels whose explicit Khatri-Rao product is huge.

TensorLy's ``parafac`` forms the Khatri-Rao product of all factors but one explicitly: for a
``512 x 512 x 3 x 3`` kernel at rank 572 that is a ``(786432, 572)`` float64 matrix (3.6 GB)
for each spatial mode, every iteration; two iterations took 42 s on one core and a compress
candidate search ran for tens of minutes. Here the MTTKRP of mode ``n`` contracts the largest
other mode first (one GEMM, ``prod(shape) / shape[m] * R`` numbers) and then the remaining
modes one at a time, carrying the rank index: the same arithmetic, a few seconds per run.

The algorithm is TensorLy's (``normalize_factors=True``): factors updated in turn by solving
with the Hadamard product of the other factors' Gram matrices, the updated factor's column
norms moved into ``weights``, the relative error tracked from the Gram matrices and the last
MTTKRP, stopping when it changes by less than ``tol``. :func:`hoconv.decompose.cp_decompose_kernel`
chooses between the two (``als=``); the tests hold this one to TensorLy's errors.
"""

from __future__ import annotations

import string

import torch


def mttkrp(tensor: torch.Tensor, factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    """``unfold(tensor, mode) @ khatri_rao(factors except mode)``, never forming the product.

    Args:
        tensor: an order-N tensor.
        factors: N matrices ``(shape[i], R)`` (the one of ``mode`` is not read).
        mode: the mode left out.

    Returns:
        ``(shape[mode], R)``.
    """
    others = [m for m in range(tensor.ndim) if m != mode]
    first = max(others, key=lambda m: tensor.shape[m])
    out = torch.tensordot(tensor, factors[first], dims=([first], [0]))  # (*shape w/o first, R)
    letters = [string.ascii_letters[m] for m in range(tensor.ndim) if m != first]
    for m in (m for m in others if m != first):
        keep = [c for c in letters if c != string.ascii_letters[m]]
        spec = f"{''.join(letters)}Z,{string.ascii_letters[m]}Z->{''.join(keep)}Z"
        out = torch.einsum(spec, out, factors[m])  # contracts mode m, keeps the rank axis Z
        letters = keep
    return out  # (shape[mode], R)


def _init(tensor: torch.Tensor, rank: int, init: str, seed: int) -> list[torch.Tensor]:
    """SVD (leading left singular vectors of each unfolding) or seeded uniform factors."""
    g = torch.Generator().manual_seed(seed)
    factors = []
    for m, size in enumerate(tensor.shape):
        factor = torch.rand(size, rank, generator=g, dtype=tensor.dtype)
        if init == "svd":
            unfolded = tensor.movedim(m, 0).reshape(size, -1)  # (shape[m], rest)
            u = torch.linalg.svd(unfolded, full_matrices=False)[0]
            keep = min(rank, u.shape[1])
            factor[:, :keep] = u[:, :keep]
        factors.append(factor)
    return factors


def cp_als(
    tensor: torch.Tensor,
    rank: int,
    *,
    n_iter_max: int = 100,
    init: str = "random",
    tol: float = 1e-8,
    seed: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """CP decomposition by alternating least squares.

    Args:
        tensor: the tensor to decompose (float64 recommended).
        rank: number of rank-one components.
        n_iter_max: ALS sweeps at most.
        init: ``"svd"`` or ``"random"`` (uniform in [0, 1), seeded).
        tol: stop when the relative error changes by less than this between sweeps.
        seed: seed of the random initialisation.

    Returns:
        ``(weights (R,), [factor (shape[i], R)])`` with unit-norm factor columns.
    """
    if init not in ("svd", "random"):
        raise ValueError(f"init must be 'svd' or 'random', got {init!r}")
    factors = _init(tensor, rank, init, seed)
    weights = torch.ones(rank, dtype=tensor.dtype)
    norm_sq = float(torch.sum(tensor * tensor))
    grams = [f.T @ f for f in factors]  # (R, R) each
    previous = None
    for _ in range(n_iter_max):
        for mode in range(tensor.ndim):
            v = torch.ones(rank, rank, dtype=tensor.dtype)
            for m, gram in enumerate(grams):
                if m != mode:
                    v = v * gram
            m_n = mttkrp(tensor, factors, mode)  # factors[mode] is not read
            factor = torch.linalg.solve(v.T, m_n.T).T  # (shape[mode], R)
            norms = torch.linalg.vector_norm(factor, dim=0)
            weights = torch.where(norms == 0, torch.ones_like(norms), norms)
            factors[mode] = factor / weights
            grams[mode] = factors[mode].T @ factors[mode]
        # ||X - [[w; A]]||^2 = ||X||^2 - 2 <X, [[w; A]]> + ||[[w; A]]||^2 from the last mode
        inner = float(torch.sum(m_n * factors[-1] * weights))
        rec_sq = float(torch.sum(v * grams[-1] * torch.outer(weights, weights)))
        error = max(norm_sq - 2 * inner + rec_sq, 0.0) ** 0.5 / max(norm_sq, 1e-300) ** 0.5
        if previous is not None and abs(previous - error) < tol:
            break
        previous = error
    return weights, factors


__all__ = ["cp_als", "mttkrp"]
